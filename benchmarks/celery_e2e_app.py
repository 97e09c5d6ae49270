"""The Celery app of the end-to-end workers (``benchmarks.e2e``, ``benchmarks.celery_e2e``).

The worker process reads its broker from ``BENCH_E2E_BROKER_URL``, its ``broker_transport``
from ``BENCH_E2E_TRANSPORT`` (empty: Kombu's stock transport) and the ``global_keyprefix``
under which a Redis transport keeps every key from ``BENCH_E2E_PREFIX``; the producer builds the
same app with :func:`create_app`. Settings are Celery's defaults otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from benchmarks import e2e_jobs
from benchmarks.harness import DEFAULT_REDIS_URL

TASK = "bench.noop"


def create_app(broker_url: str, transport: str | None, prefix: str) -> Celery:
    """The benchmark app: one task running :func:`benchmarks.e2e_jobs.record`, no result backend."""
    app = Celery("benchmarks_celery_e2e", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=transport,
        broker_transport_options={"global_keyprefix": prefix},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
    )
    app.task(name=TASK, shared=False)(e2e_jobs.record)
    return app


app = create_app(
    os.environ.get(e2e_jobs.BROKER_ENV, DEFAULT_REDIS_URL),
    os.environ.get(e2e_jobs.TRANSPORT_ENV) or None,
    os.environ.get(e2e_jobs.PREFIX_ENV, "bench-unused:"),
)


@worker_ready.connect  # type: ignore[untyped-decorator]
def _announce_ready(sender: Any, **_: Any) -> None:
    e2e_jobs.announce_ready()
