"""Every Redis key this package uses, built by one function per kind from one namespace.

A namespace is Kombu's ``global_keyprefix`` (empty by default) followed by this package's own
prefix (default ``mindtrace``). Within it:

=====================================  ======  ===============================================
key                                    type    contents
=====================================  ======  ===============================================
``<ns>:queues``                        set     names of the declared queues (for listing)
``<ns>:workers``                       hash    worker id -> ``<deadline ms>|<info JSON>``: live workers
``<ns>:q:{<queue>}:meta``              hash    ``type``, ``max`` (max_priority), ``seq``
``<ns>:q:{<queue>}:ready``             zset    message id -> score, lowest first
``<ns>:q:{<queue>}:bodies``            hash    message id -> payload (ready and in flight)
``<ns>:q:{<queue>}:wake``              list    a token per ready message, for BRPOP
``<ns>:q:{<queue>}:leases``            zset    lease id -> deadline (ms) while it holds messages
``<ns>:q:{<queue>}:inflight``          zset    ``<lease>|<score>|<id>`` of messages in flight
``<ns>:q:{<queue>}:jobs``              zset    job id -> first publish (ms): the queue's job records
``<ns>:q:{<queue>}:c:<consumer>``      list    a token ends the consumer's BRPOP on the queue's slot
``<ns>:job:{<id>}``                    hash    a job record: ``job``, ``queue``, ``status``, ``attempts``, ``created``
``<ns>:job:{<id>}:done``               pubsub  the job's final status, for waiters
``<ns>:binding:<exchange>``            zset    Kombu exchange bindings -> deadline (the Kombu transport)
``<ns>:fanout:<exchange>``             pubsub  Kombu fanout messages (the Kombu transport)
=====================================  ======  ===============================================

Every key of one queue carries the queue's name as a Redis Cluster hash tag (``{...}``), so each
script touches a single slot. The name inside the tag has ``%``, ``{`` and ``}`` escaped, so it
cannot end the tag early, and queue keys all start with ``<ns>:q:{``, which no other key does:
no queue name, however chosen, can collide with another queue's or an internal key. A job
record is tagged with its job id (escaped the same way), so each record update touches one slot;
records and their queue index expire after the result TTL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "Namespace", "QueueKeys"]

DEFAULT_PREFIX = "mindtrace"
_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


@dataclass(frozen=True)
class QueueKeys:
    """The six keys of one queue, in the order the scripts take them (see ``lua/lib.lua``)."""

    meta: str
    ready: str
    bodies: str
    wake: str
    leases: str
    inflight: str

    def all(self) -> list[str]:
        return [self.meta, self.ready, self.bodies, self.wake, self.leases, self.inflight]


@dataclass(frozen=True)
class Namespace:
    """Builds every key: ``Namespace(global_keyprefix="tenant-a:", prefix="mindtrace")``."""

    global_keyprefix: str = ""
    prefix: str = DEFAULT_PREFIX

    @property
    def root(self) -> str:
        return f"{self.global_keyprefix}{self.prefix}"

    @property
    def registry(self) -> str:
        """The set of declared queue names."""
        return f"{self.root}:queues"

    @property
    def workers(self) -> str:
        """The worker registry: worker id -> deadline and info."""
        return f"{self.root}:workers"

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - namespaces are few and live as long as the process
    def queue(self, name: str) -> QueueKeys:
        """The keys of queue ``name``, all in one hash slot (built once per queue)."""
        base = f"{self.root}:q:{{{name.translate(_ESCAPES)}}}:"
        return QueueKeys(*(base + kind for kind in ("meta", "ready", "bodies", "wake", "leases", "inflight")))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - as queue()
    def job_index(self, queue: str) -> str:
        """The ids of ``queue``'s job records by first publish time (in the queue's slot)."""
        return f"{self.root}:q:{{{queue.translate(_ESCAPES)}}}:jobs"

    def job(self, job_id: str) -> str:
        """The record of job ``job_id``."""
        return f"{self.root}:job:{{{job_id.translate(_ESCAPES)}}}"

    def job_done(self, job_id: str) -> str:
        """The pub/sub channel announcing job ``job_id``'s final status."""
        return f"{self.job(job_id)}:done"

    def consumer_wake(self, consumer: str, queue: str) -> str:
        """A consumer's own wake-up list beside ``queue``'s (in its slot, so that one BRPOP
        waits on both): a token there ends its BRPOP (``RedisStore.wake``)."""
        return f"{self.root}:q:{{{queue.translate(_ESCAPES)}}}:c:{consumer}"

    def queue_of_wake_key(self, key: str) -> str:
        """The queue whose ``wake`` key this is (the inverse of :meth:`queue` for BRPOP replies)."""
        head = f"{self.root}:q:{{"
        if not (key.startswith(head) and key.endswith("}:wake")):
            raise ValueError(f"not a wake key of this namespace: {key!r}")
        escaped = key[len(head):-len("}:wake")]
        return escaped.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")

    def binding(self, exchange: str) -> str:
        """Kombu's binding table of ``exchange`` (routing key, pattern, queue triples)."""
        return f"{self.root}:binding:{exchange}"

    def fanout(self, exchange: str) -> str:
        """The pub/sub channel of a fanout ``exchange``."""
        return f"{self.root}:fanout:{exchange}"
