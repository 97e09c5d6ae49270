"""The Redis backend: the seam over :class:`~mindtrace_kombu.redis_store.RedisStore`.

Messages are stored as Kombu virtual-transport payloads (:mod:`.wire`), so the Kombu transport
``mindtrace-redis`` (Celery, plain Kombu) reads what this backend writes and the other way
round. Every operation is the store's (round trips in :mod:`mindtrace_kombu.redis_store.store`):
publish, get, count, purge 1; declare 1 pipelined; delete 2; a consumer's fetch 1 per batch
(the settlements since the last fetch ride along), plus one BRPOP while its queues are empty.

Takes with acknowledgement hold a :class:`~mindtrace_kombu.redis_store.Lease`: one per
consumer, one per backend for ``get(ack=True)``; a heartbeat keeps it alive, so a job runs as
long as it needs and returns within ``lease_timeout`` of its consumer's death.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import AbstractContextManager
from collections import defaultdict
from typing import Any, Iterable, Sequence

from ..errors import QueueNotFound
from ..queues import QueueSpec
from ..redis_store import Lease, RedisStore, Stored
from .base import CompleteOnReturn, Delivery, Settlement, WireMessage, WithoutExchanges
from .errors import translate_errors
from .wire import decode_payload, delivery_tag, encode_payload

__all__ = ["RedisBackend", "RedisConsumer"]

logger = logging.getLogger(__name__)

#: Longest single BRPOP of an idle consumer; must stay below the client's socket timeout.
MAX_WAIT = 1.0


def _delivery(stored: Stored, settle: Any, redelivered: bool | None = None) -> Delivery:
    """The delivery of a taken message (``redelivered``: given for one peeked, not taken)."""
    message, priority = decode_payload(stored.payload)
    if redelivered is None:
        redelivered = stored.redelivered
    return Delivery(stored.queue, message, priority=priority, redelivered=redelivered, tag=stored.member, settle=settle)


class RedisBackend(WithoutExchanges, CompleteOnReturn):
    """A :class:`~.base.Backend` on one Redis namespace.

    Args:
        store: the store (its redis-py client pools connections for every thread).
        url: the broker URL with the password masked, for errors.
    """

    backend_name = "the Redis backend"

    def __init__(self, store: RedisStore, *, url: str) -> None:
        self.store = store
        self.url = url
        self._claims: Lease | None = None
        self._claims_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r}, namespace={self.store.namespace.root!r})"

    def errors(self, queue: str) -> AbstractContextManager[None]:
        """Broker exceptions raised in the block become this package's errors."""
        return translate_errors(self.url, queue)

    def declare(self, spec: QueueSpec) -> QueueSpec:
        with self.errors(spec.name):
            return self.store.declare(spec)

    def lookup(self, name: str) -> QueueSpec | None:
        with self.errors(name):
            return self.store.spec(name)

    def list_specs(self, candidates: Iterable[str]) -> list[QueueSpec]:
        with self.errors("*"):
            return self.store.specs()

    def count(self, queue: str) -> int:
        with self.errors(queue):
            return self.store.count(queue)

    def purge(self, queue: str) -> int:
        with self.errors(queue):
            return self.store.purge(queue)

    def delete(self, queue: str, *, if_empty: bool = False) -> None:
        with self.errors(queue):
            self.store.delete(queue, if_empty=if_empty)

    def publish(self, queue: str, messages: Sequence[WireMessage], priority: int | None) -> None:
        self.publish_recorded(queue, messages, priority)

    def publish_recorded(
        self, queue: str, messages: Sequence[WireMessage], priority: int | None,
        records: Sequence[tuple[str, int, bytes | str]] = (), record_ttl: float = 0.0,
    ) -> None:
        """Publish, writing a job record QUEUED per message in the same script call
        (``(job id, attempts, job data)``; empty data: the message's payload holds the job)."""
        items = [
            (json.dumps(encode_payload(message, "", queue, priority, delivery_tag())), priority or 0)
            for message in messages
        ]
        with self.errors(queue):
            self.store.put(queue, items, records, record_ttl=record_ttl)

    def get(self, queue: str, *, ack: bool) -> Delivery | None:
        with self.errors(queue):
            if not ack:
                stored = self.store.get(queue)
                return None if stored is None else _delivery(stored, None)
            found = self._claim_lease().take(queue, 1)
        return _delivery(found[0], self._settle_claim) if found else None

    def _claim_lease(self) -> Lease:
        with self._claims_lock:
            if self._claims is None:
                self._claims = Lease(self.store)
            return self._claims

    def _settle_claim(self, delivery: Delivery, how: Settlement) -> None:
        lease = self._claim_lease()
        with self.errors(delivery.queue):
            if how is Settlement.REQUEUE:
                lease.settle(delivery.queue, requeues=[delivery.tag])
            else:
                lease.settle(delivery.queue, acks=[delivery.tag])

    def consumer(self, queues: Sequence[str], prefetch: int) -> RedisConsumer:
        return RedisConsumer(self, queues, prefetch)

    def unacked_counts(self) -> dict[str, int] | None:
        with self.errors("*"):
            return self.store.inflight_counts()

    @property
    def registry_ttl(self) -> float:
        """The lease timeout: a worker is listed as long as its lease would hold its jobs."""
        return self.store.lease_timeout

    def peek(self, queue: str, limit: int) -> list[Delivery]:
        with self.errors(queue):
            found = self.store.peek(queue, limit)
        return [_delivery(Stored(queue, "", payload), None, redelivered) for payload, redelivered in found]

    def published_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        with self.errors("*"):
            return self.store.published_counts(queues)

    def consumer_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        return None

    def announce(self, worker_id: str, info: str, ttl: float) -> None:
        with self.errors("*"):
            self.store.announce(worker_id, info, ttl)

    def forget_worker(self, worker_id: str) -> None:
        with self.errors("*"):
            self.store.forget_worker(worker_id)

    def workers(self) -> list[str | bytes]:
        with self.errors("*"):
            return list(self.store.workers())

    def close(self) -> None:
        with self._claims_lock:
            lease, self._claims = self._claims, None
        try:
            if lease is not None:
                with self.errors("*"):
                    lease.close()
        finally:
            self.store.client.close()


class RedisConsumer:
    """Takes messages of some queues under its own lease.

    ``fetch`` takes up to the free prefetch from the queues in turn (one script call per queue
    tried, carrying that queue's settlements since the last call); when they are all empty it
    sends the remaining settlements and blocks in BRPOP on their wake-up lists. Deliveries may
    be settled from any thread; a settlement made while the consumer is blocked, and every
    requeue, is sent at once by the settling thread.
    """

    def __init__(self, backend: RedisBackend, queues: Sequence[str], prefetch: int) -> None:
        self.backend = backend
        self.queues = list(queues)
        self.prefetch = max(1, prefetch)
        self.lease = Lease(backend.store)
        self._lock = threading.Condition()
        self._unsettled = 0
        self._acks: dict[str, list[str]] = defaultdict(list)
        self._requeues: dict[str, list[str]] = defaultdict(list)
        self._waiting = False
        self._woken = False  # wake(): the next fetch returns at once
        self._next = 0
        self._turn = 0  # which slot's queues the next wait blocks on (Redis Cluster)

    def set_prefetch(self, prefetch: int) -> None:
        with self._lock:
            self.prefetch = max(1, prefetch)
            self._lock.notify_all()

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        woken: str | None = None
        while True:
            with self._lock:
                room = min(max_count, self.prefetch - self._unsettled)
            if room > 0:
                found = self._take(room, first=woken)
                if found:
                    return found
            remaining = deadline - time.monotonic()
            with self._lock:
                if remaining <= 0 or self._woken:
                    self._woken = False
                    return []
            if room <= 0:
                with self._lock:  # wait for a settlement to free prefetch
                    if self.prefetch - self._unsettled <= 0:
                        self._lock.wait(remaining)
                woken = None
                continue
            woken = self._wait(min(remaining, MAX_WAIT))

    def _take(self, room: int, first: str | None) -> list[Delivery]:
        order = self.queues[self._next:] + self.queues[:self._next]
        if first in order:
            order.remove(first)
            order.insert(0, first)
        self._next = (self._next + 1) % len(self.queues)
        deliveries: list[Delivery] = []
        for queue in order:
            acks, requeues = self._pop_settlements(queue)
            try:
                with self.backend.errors(queue):
                    found = self.lease.take(queue, room - len(deliveries), acks=acks, requeues=requeues)
            except QueueNotFound:
                self._forget_queue(queue)
                continue
            deliveries += (_delivery(stored, self._settle) for stored in found)
            if len(deliveries) >= room:
                break
        with self._lock:
            self._unsettled += len(deliveries)
        return deliveries

    def _forget_queue(self, queue: str) -> None:
        """A consumed queue was deleted (its messages with it): consume the others; with none
        left, raise :class:`QueueNotFound`."""
        logger.warning("queue %r was deleted; consuming %d other queues", queue, len(self.queues) - 1)
        self.queues.remove(queue)
        self._next = 0
        if not self.queues:
            raise QueueNotFound(queue)

    def _wait(self, timeout: float) -> str | None:
        self._flush()
        with self._lock:
            if self._woken:
                return None
            self._waiting = True
        try:
            with self.backend.errors(",".join(self.queues)):
                self._turn += 1
                return self.backend.store.wait(self.queues, timeout, self.lease.id, self._turn)
        finally:
            with self._lock:
                self._waiting = False
            self._flush()

    def wake(self) -> None:
        with self._lock:
            self._woken = True
            self._lock.notify_all()
            waiting = self._waiting
        if waiting:
            with self.backend.errors(",".join(self.queues)):
                self.backend.store.wake(self.lease.id, self.queues)

    def _pop_settlements(self, queue: str) -> tuple[list[str], list[str]]:
        with self._lock:
            return self._acks.pop(queue, []), self._requeues.pop(queue, [])

    def _settle(self, delivery: Delivery, how: Settlement) -> None:
        with self._lock:
            target = self._requeues if how is Settlement.REQUEUE else self._acks
            target[delivery.queue].append(delivery.tag)
            self._unsettled -= 1
            self._lock.notify_all()
            send_now = self._waiting or how is Settlement.REQUEUE  # a requeued message is due back now
        if send_now:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            queues = set(self._acks) | set(self._requeues)
        for queue in queues:
            acks, requeues = self._pop_settlements(queue)
            try:
                with self.backend.errors(queue):
                    self.lease.settle(queue, acks=acks, requeues=requeues)
            except QueueNotFound:
                pass  # deleted with its messages: nothing left to settle

    def close(self) -> None:
        """Send the settlements, then give back what is still held (first in line, in order)."""
        try:
            self._flush()
        finally:
            with self.backend.errors(",".join(self.queues)):
                self.lease.close()

