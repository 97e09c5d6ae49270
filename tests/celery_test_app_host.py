"""A host Celery project on Kombu's stock Redis transport, for the shared-database test.

It has its own JSON task on its own queue (the usual Celery layout: a direct exchange per queue,
acks_late bookkeeping in Redis's ``unacked`` keys) and one job task. The worker reads the queue
names from ``CELERY_HOST_QUEUE`` / ``CELERY_HOST_JOB_QUEUE``; tests build the same app with
:func:`create_app`.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from mindtrace_kombu import Job
from mindtrace_kombu.celery import job_queue, job_task
from tests.celery_test_app_models import CeleryInput, CeleryOutput


def create_app(broker: str, host_queue: str, jobs_queue: str) -> Any:
    """The host app: stock transport (no ``broker_transport``), JSON tasks, results in Redis."""
    app = Celery("celery_test_app_host")
    app.conf.update(
        broker_url=broker,
        result_backend=broker,
        task_default_queue=host_queue,
        task_queues=[Queue(host_queue, Exchange(host_queue), routing_key=host_queue), job_queue(jobs_queue)],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_enable_remote_control=False,
    )

    @app.task(name="host.add", shared=False)
    def add(x: int, y: int) -> int:
        """The host's own task."""
        return x + y

    @job_task(app, queue=jobs_queue, name="host.process", shared=False)
    def process(job: Job) -> CeleryOutput:
        """The job task, run by the same stock-transport worker."""
        payload = job.payload.input
        assert isinstance(payload, CeleryInput)
        return CeleryOutput(job_id=job.id, doubled=payload.value * 2, input_type=type(payload).__name__)

    return app


app = create_app(
    os.environ.get("CELERY_TEST_BROKER", "redis://localhost:6379/0"),
    os.environ.get("CELERY_HOST_QUEUE", "unused-host"),
    os.environ.get("CELERY_HOST_JOB_QUEUE", "unused-host-jobs"),
)
