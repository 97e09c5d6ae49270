"""The end-to-end actor on Dramatiq: ``dramatiq benchmarks.e2e_dramatiq --processes 2 --threads 1``.

The worker builds its broker from ``BENCH_E2E_BROKER_URL`` (``redis://`` or ``amqp://``), its
Redis namespace from ``BENCH_E2E_PREFIX`` and its actor's queue from ``BENCH_E2E_QUEUE``;
the producer builds the same with :func:`create_broker` and :func:`declare_actor`. Each worker
process announces itself once booted. Settings are Dramatiq's defaults otherwise.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from benchmarks import e2e_jobs


class AnnounceReady(dramatiq.Middleware):
    """Counts each worker process on :func:`benchmarks.e2e_jobs.ready_key` once it consumes."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        e2e_jobs.announce_ready()


def _pika_url(url: str) -> str:
    """A Kombu AMQP URL as pika reads it: the vhost (``//`` is ``/`` to Kombu) percent-encoded."""
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) or "/"
    return parts._replace(path="/" + quote(vhost, safe="")).geturl()


def create_broker(url: str, prefix: str) -> dramatiq.Broker:
    """A Redis broker keeping its keys under ``prefix``, or a RabbitMQ one."""
    if url.startswith("redis"):
        return RedisBroker(url=url, namespace=prefix.rstrip(":"))  # type: ignore[no-untyped-call]
    return RabbitmqBroker(url=_pika_url(url))


def declare_actor(broker: dramatiq.Broker, queue: str) -> dramatiq.Actor[Any, Any]:
    """The actor running :func:`benchmarks.e2e_jobs.record` on ``queue``."""
    return dramatiq.actor(actor_name="bench_e2e", queue_name=queue, broker=broker)(e2e_jobs.record)


if e2e_jobs.QUEUE_ENV in os.environ:  # in the worker
    broker = create_broker(os.environ[e2e_jobs.BROKER_ENV], os.environ[e2e_jobs.PREFIX_ENV])
    broker.add_middleware(AnnounceReady())
    dramatiq.set_broker(broker)
    declare_actor(broker, os.environ[e2e_jobs.QUEUE_ENV])
