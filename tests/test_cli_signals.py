"""Commands interrupted by SIGTERM or SIGHUP leave nothing behind: ``dlq list`` gives the dead
letters it holds back at once, ``bench`` deletes its scratch queue."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mindtrace_kombu import Orchestrator
from mindtrace_kombu.backends.base import WireMessage
from mindtrace_kombu.serialization import CONTENT_TYPE

from .conftest import REDIS_TEST_URL, make_client, unique

pytestmark = pytest.mark.timeout(120)
SCRIPT = Path(sys.executable).with_name("mindtrace-jobs")


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SCRIPT), "--broker", REDIS_TEST_URL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, f"the command ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within 60 s"
        time.sleep(0.005)  # polling the broker's state, the only view into another process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_dlq_list_interrupted_gives_the_letters_back_at_once(sig: signal.Signals) -> None:
    orchestrator = Orchestrator(make_client("redis"))
    queue = unique("signals")
    dlq = f"{queue}.dlq"
    orchestrator.declare_queue(queue)
    orchestrator.declare_queue(dlq)
    total = 30_000
    letter = WireMessage(b"x" * 200, CONTENT_TYPE, "utf-8", {"x-death-reason": "test"})
    for _ in range(0, total, 1000):
        orchestrator.backend.publish(dlq, [letter] * 1000, None)
    try:
        listing = start("dlq", "list", queue)
        wait_until(lambda: orchestrator.count_queue_messages(dlq) < total, "letters taken", listing)
        listing.send_signal(sig)
        assert listing.wait(30) == 128 + sig
        assert orchestrator.count_queue_messages(dlq) == total  # back now, not when a lease expires
    finally:
        for name in (queue, dlq):
            orchestrator.delete_queue(name)
        orchestrator.close()


def test_bench_interrupted_deletes_its_scratch_queue() -> None:
    orchestrator = Orchestrator(make_client("redis"))

    def scratch() -> list[str]:
        return [spec.name for spec in orchestrator.list_queues() if spec.name.startswith("mindtrace-bench-")]

    before = set(scratch())
    bench = start("bench", "-n", "200000", "--batch", "1")
    try:
        wait_until(lambda: bool(set(scratch()) - before), "a scratch queue", bench)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(30) == 128 + signal.SIGTERM, bench.communicate()
        assert set(scratch()) - before == set()
    finally:
        bench.kill()
        orchestrator.close()
