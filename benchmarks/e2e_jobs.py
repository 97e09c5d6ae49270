"""The job every end-to-end worker runs, whatever its system: count the completion and record
its pickup latency in Redis, one round trip.

Workers find the recording Redis in ``BENCH_E2E_REDIS_URL`` and their run's key prefix in
``BENCH_E2E_PREFIX``; their broker, queue and Kombu transport, where their app needs them, in
``BENCH_E2E_BROKER_URL``, ``BENCH_E2E_QUEUE`` and ``BENCH_E2E_TRANSPORT``. The producer reads
the same keys (:func:`done_key` and the others). RQ runs :func:`record` itself; the other
systems wrap it in their task, actor or handler.
"""

from __future__ import annotations

import functools
import os
import time

import redis

REDIS_ENV = "BENCH_E2E_REDIS_URL"
PREFIX_ENV = "BENCH_E2E_PREFIX"
BROKER_ENV = "BENCH_E2E_BROKER_URL"
QUEUE_ENV = "BENCH_E2E_QUEUE"
TRANSPORT_ENV = "BENCH_E2E_TRANSPORT"


def done_key(prefix: str) -> str:
    """The counter of completed jobs."""
    return f"{prefix}bench.done"


def finished_key(prefix: str) -> str:
    """The list that gets one item when the last job of a run completes."""
    return f"{prefix}bench.finished"


def latencies_key(prefix: str) -> str:
    """The list of pickup latencies (seconds from publish to the job starting)."""
    return f"{prefix}bench.latencies"


def ready_key(prefix: str) -> str:
    """The counter of worker processes that announced they consume."""
    return f"{prefix}bench.ready"


@functools.cache
def _redis(url: str) -> redis.Redis:
    """One client per process (redis-py's pool reconnects after a fork)."""
    return redis.Redis.from_url(url)


def _client_and_prefix() -> tuple[redis.Redis, str]:
    return _redis(os.environ[REDIS_ENV]), os.environ[PREFIX_ENV]


def record(published: float, total: int) -> None:
    """Record ``now - published`` and count this completion; the completion that makes ``total``
    signals the end of the run on :func:`finished_key`."""
    latency = time.time() - published
    client, prefix = _client_and_prefix()
    pipe = client.pipeline(transaction=False)
    pipe.incr(done_key(prefix))
    pipe.rpush(latencies_key(prefix), latency)
    done, _ = pipe.execute()
    if done == total:
        client.rpush(finished_key(prefix), "1")


def announce_ready() -> None:
    """Count this worker process as consuming (for systems that signal readiness)."""
    client, prefix = _client_and_prefix()
    client.incr(ready_key(prefix))
