"""Kombu transports with exact fifo, stack and priority order.

Importing this package registers them with Kombu under the aliases ``mindtrace-memory``,
``mindtrace-redis`` and ``mindtrace-rediscluster`` (also usable as Celery's ``broker_transport``),
and ``rediscluster`` (so ``rediscluster://`` URLs work as they are: Kombu has no transport of
its own for Redis Cluster); :func:`register` is idempotent.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES

__all__ = ["CLUSTER_TRANSPORT", "MEMORY_TRANSPORT", "REDIS_TRANSPORT", "register"]

MEMORY_TRANSPORT = "mindtrace-memory"
REDIS_TRANSPORT = "mindtrace-redis"
CLUSTER_TRANSPORT = "mindtrace-rediscluster"


def register() -> None:
    """Make the transports resolvable by alias, e.g. ``Connection(transport="mindtrace-redis")``."""
    TRANSPORT_ALIASES[MEMORY_TRANSPORT] = "mindtrace_kombu.transport.memory:Transport"
    TRANSPORT_ALIASES[REDIS_TRANSPORT] = "mindtrace_kombu.transport.redis:Transport"
    for alias in (CLUSTER_TRANSPORT, "rediscluster"):
        TRANSPORT_ALIASES[alias] = "mindtrace_kombu.transport.cluster:Transport"


register()
