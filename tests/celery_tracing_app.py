"""The Celery app of the tracing test: ``celery -A tests.celery_tracing_app worker``.

From the environment: ``CELERY_TEST_BROKER`` (the broker URL), ``CELERY_TEST_QUEUE`` (the job
queue of the task ``mindtrace_test.traced``), ``CELERY_TEST_SPANS`` (the file that gets the
worker's finished spans as JSON lines). The task runs ``tests.worker_handlers.by_label``; a
failure is retried once by Celery, at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery

from mindtrace_kombu import Job
from mindtrace_kombu.celery import job_queue, job_task
from mindtrace_kombu.config import exact_order_transport
from tests.tracing_spans import install
from tests.worker_handlers import by_label

BROKER = os.environ["CELERY_TEST_BROKER"]
QUEUE = os.environ["CELERY_TEST_QUEUE"]
install(Path(os.environ["CELERY_TEST_SPANS"]))

app = Celery("celery_tracing_app")
app.conf.update(
    broker_url=BROKER,
    broker_transport=exact_order_transport(BROKER),
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_enable_remote_control=False,
    broker_heartbeat=2,
    task_queues=[job_queue(QUEUE)],
)


@job_task(
    app, queue=QUEUE, name="mindtrace_test.traced", bind=True,
    autoretry_for=(RuntimeError,), max_retries=1, default_retry_delay=0,
)
def traced(self: Any, job: Job) -> None:
    """``by_label`` with Celery's attempt number (Celery retries the same job object)."""
    by_label(job.model_copy(update={"attempts": self.request.retries + 1}))
