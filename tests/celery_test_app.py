"""The Celery app that the bridge tests run in ``celery -A tests.celery_test_app worker``.

Everything variable comes from the environment, set by the test that starts the worker:

* ``CELERY_TEST_BROKER``: the broker URL (the app runs on this package's Redis transport for
  Redis URLs, for exact priorities); ``CELERY_TEST_RESULT_BACKEND``: the result backend.
* ``CELERY_TEST_QUEUES``: JSON ``{"double": name, "priority": name, "flaky": name}``; each task
  runs the jobs of its queue. ``CELERY_TEST_MAX_PRIORITY``: the priority queue's max_priority.
* ``CELERY_TEST_LOG``: a file that gets one JSON line per task execution.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery

from mindtrace_kombu import Job
from mindtrace_kombu.celery import job_queue, job_task
from mindtrace_kombu.config import exact_order_transport
from tests.celery_test_app_models import CeleryInput, CeleryOutput

BROKER = os.environ.get("CELERY_TEST_BROKER", "redis://localhost:6379/0")
QUEUES: dict[str, str] = json.loads(os.environ.get("CELERY_TEST_QUEUES", "{}"))
MAX_PRIORITY = int(os.environ.get("CELERY_TEST_MAX_PRIORITY", "10"))
LOG = os.environ.get("CELERY_TEST_LOG", os.devnull)

app = Celery("celery_test_app")
app.conf.update(
    broker_url=BROKER,
    broker_transport=exact_order_transport(BROKER),
    result_backend=os.environ.get("CELERY_TEST_RESULT_BACKEND", "redis://localhost:6379/0"),
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_enable_remote_control=False,  # no pidbox queue left behind on the broker
    # The worker's event loop notices a warm shutdown when its poll returns, at the next timer:
    # AMQP heartbeats every second instead of Kombu's 10 s poll cap keep worker stops fast.
    broker_heartbeat=2,
    task_queues=[
        job_queue(QUEUES.get("double", "unused-double")),
        job_queue(QUEUES.get("priority", "unused-priority"), max_priority=MAX_PRIORITY),
        job_queue(QUEUES.get("flaky", "unused-flaky")),
        job_queue(QUEUES.get("unregistered", "unused-unregistered")),
    ],
)


def _record(task: str, job: Job, **extra: Any) -> None:
    line = {"task": task, "job": job.id, "input_type": type(job.payload.input).__name__, **extra}
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


def _output(job: Job) -> CeleryOutput:
    payload = job.payload.input
    assert isinstance(payload, CeleryInput), f"payload arrived as {type(payload).__name__}"
    return CeleryOutput(job_id=job.id, doubled=payload.value * 2, input_type=type(payload).__name__)


@job_task(app, queue=QUEUES.get("double", "unused-double"), name="mindtrace_test.double")
def double(job: Job) -> CeleryOutput:
    """Double the input value."""
    _record("double", job)
    return _output(job)


@job_task(app, queue=QUEUES.get("priority", "unused-priority"), name="mindtrace_test.ordered", bind=True)
def ordered(self: Any, job: Job) -> CeleryOutput:
    """Record the execution order (and the message priority) of priority jobs."""
    _record("ordered", job, priority=self.request.delivery_info.get("priority"))
    return _output(job)


@job_task(
    app, queue=QUEUES.get("flaky", "unused-flaky"), name="mindtrace_test.flaky", bind=True,
    autoretry_for=(RuntimeError,), max_retries=2, default_retry_delay=0,
)
def flaky(self: Any, job: Job) -> CeleryOutput:
    """Fail the first ``fail_times`` attempts; Celery retries up to twice."""
    _record("flaky", job, retries=self.request.retries)
    payload = job.payload.input
    assert isinstance(payload, CeleryInput)
    if self.request.retries < payload.fail_times:
        raise RuntimeError(f"attempt {self.request.retries} of job {job.id} fails")
    return _output(job)
