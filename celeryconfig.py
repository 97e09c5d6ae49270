"""Celery configuration for mindtrace-kombu jobs, used by the examples and tests.

Load it with ``app.config_from_object("celeryconfig")`` (or ``celery --config celeryconfig``).
The broker comes from ``MINDTRACE_BROKER_URL``, else ``CELERY_BROKER_URL``, else Redis on
localhost; ``Orchestrator.from_config("celeryconfig")`` and ``Orchestrator.from_env()`` read the
same variables. On Redis, Celery runs on this package's Redis transport, which gives exact
priorities (higher number first) instead of Celery's reversed 4-bucket Redis priorities.
"""

from __future__ import annotations

import os

from mindtrace_kombu.config import DEFAULT_BROKER_URL, broker_url_from_env, exact_order_transport
from mindtrace_kombu.serialization import CONTENT_TYPE

broker_url = broker_url_from_env()
#: ``mindtrace-redis`` for Redis URLs (its Sentinel variant for ``sentinel://``), else Celery's default.
broker_transport = exact_order_transport(broker_url)

#: Results in Redis: the broker itself when it is Redis, else ``CELERY_RESULT_BACKEND`` or local Redis.
result_backend = os.environ.get("CELERY_RESULT_BACKEND") or (
    broker_url if broker_transport is not None else DEFAULT_BROKER_URL
)

# Jobs travel with their own content type; other tasks keep JSON. Never pickle.
accept_content = ["json", CONTENT_TYPE]
result_accept_content = ["json", CONTENT_TYPE]

# Exact priority order needs each worker process to hold one message at a time, acknowledged
# after the task ran (a crashed worker's job is delivered again).
task_acks_late = True
worker_prefetch_multiplier = 1
