"""Kombu transport ``mindtrace-sentinel``: :mod:`mindtrace_kombu.transport.redis` through Redis
Sentinel.

Same queues, keys and semantics as ``mindtrace-redis``; the connection pools follow the master
that the sentinels elect, as Kombu's ``sentinel://`` transport does. Connection string:
``sentinel://host:26379[;sentinel://host2:26379][/db]`` with the transport option
``master_name`` (and Kombu's ``min_other_sentinels``, ``sentinel_kwargs``). Celery:
``broker_transport = "mindtrace_kombu.transport.sentinel:Transport"``.

Kombu's ``sentinel_fanout_compat`` also publishes and listens on the fanout topic of Kombu <
5.4 Sentinel workers (``/{db}.<exchange>``), under ``global_keyprefix`` as Kombu sends it.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis

from . import redis

__all__ = ["Channel", "Transport"]


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
