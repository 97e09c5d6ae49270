"""A Redis store for queues with exact order and leases; Kombu-free (it imports redis-py only).

Used by the Redis backend (``mindtrace_kombu.backends.redis``) and by the Kombu transport
(``mindtrace_kombu.transport.redis``), so both see the same queues and messages.
"""

from __future__ import annotations

from .keys import DEFAULT_PREFIX, Namespace, QueueKeys
from .leases import Lease
from .store import DEFAULT_LEASE_TIMEOUT, DEFAULT_WAIT_TIMEOUT, NotReplicated, RedisStore, Stored, new_lease_id

__all__ = [
    "DEFAULT_LEASE_TIMEOUT", "DEFAULT_PREFIX", "DEFAULT_WAIT_TIMEOUT", "Lease", "Namespace", "NotReplicated", "QueueKeys",
    "RedisStore", "Stored", "new_lease_id",
]
