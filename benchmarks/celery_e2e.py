"""Celery end to end: a ``celery worker -P prefork -c 2`` on Kombu's stock Redis transport and on
``mindtrace-redis``, both at Celery's and the transport's default settings.

Each transport gets a fresh queue and a ``global_keyprefix`` of its own (every key deleted
afterwards). Once the worker consumes, ``n`` no-op tasks (at most :data:`MAX_TASKS`) are sent with
``send_task``; the rate counts from the first publish to the last completion, which the task that
completes the count reports on a Redis list the producer blocks on (no polling).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import redis

from benchmarks.harness import Result, Scenario, Settings, Skipped
from benchmarks.names import CELERY_E2E_OURS, CELERY_E2E_STOCK

#: Tasks per transport: ``Settings.n``, capped.
MAX_TASKS = 5_000
#: Seconds for a worker to start consuming, and to stop.
WORKER_TIMEOUT = 60.0
#: Completions per second below which a run is declared stuck.
MIN_RATE = 20.0
ROOT = Path(__file__).resolve().parent.parent


def _start_worker(
    s: Settings, transport: str | None, prefix: str, queue: str, log: Path
) -> subprocess.Popen[bytes]:
    """Start the prefork worker in a process group of its own."""
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.celery_e2e_app", "worker",
        "--pool", "prefork", "--concurrency", "2", "--queues", queue,
        "--hostname", f"{queue}@{socket.gethostname()}",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "BENCH_CELERY_BROKER_URL": s.redis_url,
        "BENCH_CELERY_TRANSPORT": transport or "",
        "BENCH_CELERY_PREFIX": prefix,
    }
    with open(log, "wb") as sink:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, then SIGKILL whatever is left of the process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(WORKER_TIMEOUT)


def _tail(log: Path) -> str:
    """The end of the worker's output, for error messages."""
    return log.read_text(errors="replace")[-3000:]


def _wait_ready(client: redis.Redis, key: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the worker consumes (its ``worker_ready`` handler sets ``key``)."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    while not client.exists(key):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the celery worker did not start:\n{_tail(log)}")
        time.sleep(0.05)


def _wait_finished(client: redis.Redis, key: str, timeout: float) -> bool:
    """Block until ``key`` gets an item, in BLPOPs of a second (below redis-py's socket timeout)."""
    deadline = time.monotonic() + timeout
    while not client.blpop([key], timeout=1):
        if time.monotonic() > deadline:
            return False
    return True


def end_to_end(s: Settings, name: str, transport: str | None) -> list[Result]:
    """Run ``min(s.n, MAX_TASKS)`` no-op tasks through a prefork worker on ``transport``."""
    try:
        from benchmarks import celery_e2e_app as bench_app
    except ImportError as exc:
        raise Skipped(f"celery is not installed (pip install celery): {exc}") from exc

    n = min(s.n, MAX_TASKS)
    queue = s.queue_name(f"celery-e2e-{transport or 'stock'}")
    prefix = f"{queue}:"
    app = bench_app.create_app(s.redis_url, transport, prefix)
    client = redis.Redis.from_url(s.redis_url)
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "worker.log"
        worker = _start_worker(s, transport, prefix, queue, log)
        try:
            _wait_ready(client, bench_app.ready_key(prefix), worker, log)
            start = time.perf_counter()
            with app.producer_or_acquire() as producer:
                for _ in range(n):
                    app.send_task("bench.noop", args=(n,), queue=queue, producer=producer)
            timeout = max(30, int(n / MIN_RATE))
            if not _wait_finished(client, bench_app.finished_key(prefix), timeout):
                done = int(client.get(bench_app.done_key(prefix)) or 0)
                raise RuntimeError(f"{done} of {n} tasks completed in {timeout} s:\n{_tail(log)}")
            seconds = time.perf_counter() - start
        finally:
            _stop_worker(worker)
            app.close()
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for first in range(0, len(keys), 500):
                client.delete(*keys[first:first + 500])
            client.close()
    return [Result("redis", name, n, seconds, note="prefork -c 2")]


def scenarios(backend: str) -> list[Scenario]:
    """One scenario per transport, on Redis only (a failure of one keeps the other's row)."""
    if backend != "redis":
        return []
    return [
        Scenario(
            "celery prefork e2e (stock redis)",
            partial(end_to_end, name=CELERY_E2E_STOCK, transport=None),
        ),
        Scenario(
            "celery prefork e2e (mindtrace-redis)",
            partial(end_to_end, name=CELERY_E2E_OURS, transport="mindtrace-redis"),
        ),
    ]
