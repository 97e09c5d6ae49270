"""A worker process that meets a decompression bomb: ``python bomb_worker.py BACKEND URL LIMIT``.

It puts a 200 MiB gzip bomb (0.2 MB on the wire) and one good job on a fresh queue, records its
resident memory, consumes the queue with ``max_decompressed_bytes=LIMIT``, and prints a JSON
report: memory before consuming, peak memory, and what happened to the two messages.
"""

from __future__ import annotations

import json
import sys
import uuid

from mindtrace_kombu import Orchestrator, Worker, client_from_url
from mindtrace_kombu.backends.base import WireMessage
from mindtrace_kombu.decoding import DecodeLimits
from mindtrace_kombu.serialization import CONTENT_TYPE
from tests.conftest import make_job
from tests.test_poison import GZIP, bomb


def memory_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak) of this process; unlike ``ru_maxrss``, the
    peak is this program's own, not inherited from the parent across ``exec``."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024


def main(url: str, limit: int) -> None:
    orchestrator = Orchestrator(client_from_url(url), limits=DecodeLimits(max_decompressed_bytes=limit))
    queue = f"test-bomb-{uuid.uuid4().hex[:10]}"
    orchestrator.declare_queue(queue)
    try:
        orchestrator.backend.publish(queue, [WireMessage(bomb(), CONTENT_TYPE, "utf-8", {"compression": GZIP})], None)
        orchestrator.publish(queue, make_job(1))
        rss_before = memory_bytes("VmRSS")
        stats = Worker(orchestrator, queue, lambda job: None, max_retries=0).run(until_empty=True)
        peak_rss = memory_bytes("VmHWM")
        letters = orchestrator.dead_letters(queue)
        report = {
            "rss_before": rss_before, "peak_rss": peak_rss, "completed": stats.completed,
            "dead_lettered": len(letters), "reason": letters[0].reason if letters else "",
        }
    finally:
        for name in (queue, f"{queue}.dlq"):
            try:
                orchestrator.delete_queue(name)
            except KeyError:
                pass
        orchestrator.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[2], int(sys.argv[3]))
