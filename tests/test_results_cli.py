"""``mindtrace-jobs job`` and ``jobs``: the installed script in subprocesses, on real Redis."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

from mindtrace_kombu import Orchestrator

from .conftest import REDIS_TEST_URL, make_client, unique
from .results_models import handler, make


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mindtrace-jobs", "--broker", REDIS_TEST_URL, *args], capture_output=True, text=True, timeout=60)


def test_job_and_jobs_commands() -> None:
    # Given a completed job, a failed one and a queued one on Redis
    make_client("redis")
    with Orchestrator.from_url(REDIS_TEST_URL) as orchestrator:
        queue = unique("cli")
        orchestrator.declare_queue(queue)
        try:
            done, failed = make(3), make(-1, max_retries=0)
            orchestrator.publish_many(queue, [done, failed])
            orchestrator.consume(queue, handler, until_empty=True)
            waiting = make(4)
            orchestrator.publish(queue, waiting)
            # When the commands run concurrently
            with ThreadPoolExecutor(6) as pool:
                shown, human, listed, failures, missing, timeout = pool.map(lambda args: cli(*args), [
                    ("job", done.id, "--json"), ("job", failed.id), ("jobs", "--queue", queue, "--json"),
                    ("jobs", "--queue", queue, "--status", "failed"), ("job", "no-such-job"),
                    ("job", waiting.id, "--wait", "--timeout", "0.2"),
                ])
            # Then each shows what the store holds, with the documented exit codes
            assert shown.returncode == 0, shown.stderr
            record = json.loads(shown.stdout)
            assert record["status"] == "completed" and record["output"]["doubled"] == 6 and record["attempts"] == 1
            assert human.returncode == 0 and "ValueError: negative: -1" in human.stdout and "traceback:" in human.stdout
            assert [row["id"] for row in json.loads(listed.stdout)][0] == waiting.id
            assert {row["id"] for row in json.loads(listed.stdout)} == {done.id, failed.id, waiting.id}
            assert failed.id in failures.stdout and done.id not in failures.stdout
            assert missing.returncode == 3 and "no-such-job" in missing.stderr
            assert timeout.returncode == 1 and "still queued" in timeout.stderr
        finally:
            for name in (queue, f"{queue}.dlq"):
                orchestrator.delete_queue(name)
