"""The Celery app of the worker that ``benchmarks.celery_e2e`` starts.

The worker process reads its broker from ``BENCH_CELERY_BROKER_URL``, its ``broker_transport``
from ``BENCH_CELERY_TRANSPORT`` (empty: Kombu's stock Redis transport) and the
``global_keyprefix`` under which it keeps every key from ``BENCH_CELERY_PREFIX``; the producer
builds the same app with :func:`create_app`. Settings are Celery's defaults otherwise.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from benchmarks.harness import DEFAULT_REDIS_URL


def done_key(prefix: str) -> str:
    """The counter of completed tasks."""
    return f"{prefix}bench.done"


def finished_key(prefix: str) -> str:
    """The list that gets one item when the last task of a run completes."""
    return f"{prefix}bench.finished"


def ready_key(prefix: str) -> str:
    """Set once the worker consumes."""
    return f"{prefix}bench.ready"


def create_app(broker_url: str, transport: str | None, prefix: str) -> Celery:
    """The benchmark app: one no-op task, no result backend."""
    app = Celery("benchmarks_celery_e2e", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=transport,
        broker_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
    )

    @app.task(name="bench.noop", shared=False)
    def noop(total: int) -> None:
        """Count this completion; the one that makes ``total`` signals the end of the run."""
        client = _redis(broker_url)
        if client.incr(done_key(prefix)) == total:
            client.rpush(finished_key(prefix), "1")

    return app


@functools.lru_cache(maxsize=None)
def _redis(url: str) -> redis.Redis:
    """One client per process (redis-py's pool reconnects after a fork)."""
    return redis.Redis.from_url(url)


BROKER_URL = os.environ.get("BENCH_CELERY_BROKER_URL", DEFAULT_REDIS_URL)
PREFIX = os.environ.get("BENCH_CELERY_PREFIX", "bench-unused:")
app = create_app(BROKER_URL, os.environ.get("BENCH_CELERY_TRANSPORT") or None, PREFIX)


@worker_ready.connect
def _announce_ready(sender: Any, **_: Any) -> None:
    _redis(BROKER_URL).set(ready_key(PREFIX), "1")
