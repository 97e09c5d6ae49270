"""The example's Celery app, configured by the repository's ``celeryconfig.py``.

The broker comes from ``MINDTRACE_BROKER_URL`` or ``CELERY_BROKER_URL`` (default: Redis on
localhost). Run a worker from the repository root::

    celery -A examples.celery_app.app worker --pool solo --queues thumbnail_jobs --loglevel INFO
"""

from __future__ import annotations

import os

from celery import Celery

from mindtrace_kombu.celery import job_queue

#: The job queue of the example (``EXAMPLE_QUEUE`` overrides it, as the tests do).
QUEUE = os.environ.get("EXAMPLE_QUEUE", "thumbnail_jobs")

app = Celery("celery_app", include=["examples.celery_app.tasks"])
app.config_from_object("celeryconfig")
# The worker declares the queues it consumes: tell it that this one is a priority queue.
app.conf.task_queues = [job_queue(QUEUE, max_priority=10)]
