"""Redis Sentinel variant of this package's exact-order Redis transport.

Same storage layout and semantics as :mod:`mindtrace_kombu.transport.redis`; the connection pool
follows the master that the sentinels elect, as Kombu's ``sentinel://`` transport does.
Connection string: ``sentinel://host:26379[;sentinel://host2:26379][/db]`` with the transport
option ``master_name``. Celery: ``broker_transport = "mindtrace_kombu.transport.sentinel:Transport"``.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis

from . import redis

__all__ = ["Channel", "Transport"]


class Channel(redis.Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """Exact-order Redis channel whose connections go to the Sentinel-elected master."""


class Transport(redis.Transport):  # type: ignore[misc]
    """Exact-order Redis transport through Redis Sentinel."""

    Channel = Channel
    default_port = 26379  # type: ignore[assignment]
    driver_name = "mindtrace-sentinel"
