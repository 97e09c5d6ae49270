"""Kombu transports with exact fifo, stack and priority order.

Importing this package registers them with Kombu under the aliases ``mindtrace-memory`` and
``mindtrace-redis`` (also usable as Celery's ``broker_transport``); :func:`register` is
idempotent.
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES

__all__ = ["MEMORY_TRANSPORT", "REDIS_TRANSPORT", "register"]

MEMORY_TRANSPORT = "mindtrace-memory"
REDIS_TRANSPORT = "mindtrace-redis"


def register() -> None:
    """Make the transports resolvable by alias, e.g. ``Connection(transport="mindtrace-redis")``."""
    TRANSPORT_ALIASES[MEMORY_TRANSPORT] = "mindtrace_kombu.transport.memory:Transport"
    TRANSPORT_ALIASES[REDIS_TRANSPORT] = "mindtrace_kombu.transport.redis:Transport"


register()
