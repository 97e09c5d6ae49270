"""Kombu transport ``mindtrace-sentinel``: :mod:`mindtrace_kombu.transport.redis` through Redis
Sentinel.

Same queues, keys and semantics as ``mindtrace-redis``; the connection pools follow the master
that the sentinels elect, as Kombu's ``sentinel://`` transport does. Connection string:
``sentinel://host:26379[;sentinel://host2:26379][/db]`` with the transport option
``master_name`` (and Kombu's ``min_other_sentinels``, ``sentinel_kwargs``). Celery:
``broker_transport = "mindtrace_kombu.transport.sentinel:Transport"``.

Kombu's ``sentinel_fanout_compat`` also publishes and listens on the fanout topic of Kombu <
5.4 Sentinel workers (``/{db}.<exchange>``), under ``global_keyprefix`` as Kombu sends it.

:class:`MasterConnection` is the connection of this package's own Sentinel client
(``RedisSentinelClient``): it waits a bounded time for the master through a failover. The Kombu
channel keeps Kombu's connection class; Kombu and Celery retry connections themselves.
"""

from __future__ import annotations

import time

from kombu.transport import redis as kombu_redis
from redis import exceptions as redis_errors
from redis.sentinel import SentinelManagedConnection

from . import redis

__all__ = ["Channel", "MasterConnection", "Transport"]

_FIRST_PAUSE, _LONGEST_PAUSE = 0.05, 0.5  # seconds between two asks for the master
_DEFAULT_MASTER_WAIT = 5.0  # without a socket_connect_timeout


class MasterConnection(SentinelManagedConnection):  # type: ignore[misc]
    """A redis-py connection to the master the sentinels name, that waits for one.

    Connecting asks the sentinels for the master, then connects to it. While none names a live
    master (a failover under way) or the one named refuses (it just died), it asks again, with a
    pause growing from 0.05 s to 0.5 s, for up to ``socket_connect_timeout`` seconds (the
    client's ``connect_timeout``), then raises the last error: a failover shorter than that is a
    pause, a longer one a ``ConnectionError``. Only connecting is repeated: a command that was
    sent is never sent again here (it may have run), so retrying it stays the caller's choice.
    A wrong password is raised at once.
    """

    def connect(self) -> None:
        deadline = time.monotonic() + (self.socket_connect_timeout or _DEFAULT_MASTER_WAIT)
        pause = _FIRST_PAUSE
        while True:
            try:
                super().connect()  # type: ignore[no-untyped-call]
                return
            except (redis_errors.AuthenticationError, redis_errors.AuthorizationError):
                raise
            except (redis_errors.ConnectionError, redis_errors.TimeoutError):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, _LONGEST_PAUSE)


class Channel(redis.Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """This package's Redis channel, its connections to the Sentinel-elected master."""

    from_transport_options = tuple(dict.fromkeys(
        redis.Channel.from_transport_options + kombu_redis.SentinelChannel.from_transport_options,
    ))

    def _get_legacy_publish_topic(self, exchange: str, routing_key: str) -> str:
        """Kombu's legacy fanout topic, under ``global_keyprefix`` as Kombu's prefixing pub/sub
        client sends it (this channel's client adds no prefix)."""
        topic: str = super()._get_legacy_publish_topic(exchange, routing_key)
        return f"{self.global_keyprefix or ''}{topic}"


class Transport(redis.Transport):  # type: ignore[misc]
    """This package's Redis transport through Redis Sentinel."""

    Channel = Channel
    default_port = 26379  # type: ignore[assignment]
    driver_name = "mindtrace-sentinel"
