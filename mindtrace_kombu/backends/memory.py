"""The in-process broker, and :class:`MemoryBackend` on top of it. No Kombu here: the Kombu
transport ``mindtrace-memory`` (:mod:`mindtrace_kombu.transport.memory`) is a thin adapter over
the same :class:`Broker`, so both see the same queues and messages.

Layout:

* ``_brokers``: module-level registry, broker id -> :class:`Broker` (:func:`broker_for`).
* :class:`Broker`: the queues by name, one ``threading.Condition`` (every operation holds it;
  puts and settlements bump ``version`` and notify it), the messages in flight by delivery tag.
* ``_Queue``: the stored :class:`~mindtrace_kombu.queues.QueueSpec`, one heap of
  :class:`Stored` messages, and the count of messages in flight.

One heap serves every type; its key is ``(-rank, 0 if returned else 1, order)``, with ``order``
the publish sequence (negated for a stack) and ``rank`` 0 outside priority queues, the priority
capped at ``max_priority`` inside (as RabbitMQ does). A returned message (rejected with requeue,
or unsettled when its consumer or backend closed) keeps its ``order``, so it goes first in line
among its priority and several returned messages keep their original order. Every operation is
O(log n), except purge and delete.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..errors import QueueNotEmpty, QueueNotFound
from ..queues import QueueSpec, QueueType
from .base import CompleteOnReturn, Consumer, Delivery, Settlement, WireMessage, WithoutExchanges

__all__ = ["Broker", "MemoryBackend", "Stored", "broker_for"]


@dataclass(eq=False)
class _Queue:
    spec: QueueSpec
    heap: list[tuple[int, int, int, Stored]] = field(default_factory=list)
    unacked: int = 0
    published: int = 0


@dataclass(eq=False)
class Stored:
    """One message on the broker, with what a Kombu consumer needs to see again."""

    message: WireMessage
    priority: int  # as published; it ranks capped at the queue's max_priority
    exchange: str
    routing_key: str
    order: int  # position among its priority: publish sequence, negated for a stack
    home: _Queue
    redelivered: bool = False


def _rank(spec: QueueSpec, priority: int) -> int:
    """Heap rank of ``priority``: 0 outside priority queues, capped at ``max_priority``."""
    if spec.queue_type is not QueueType.PRIORITY:
        return 0
    assert spec.max_priority is not None
    return min(max(priority, 0), spec.max_priority)


class Broker:
    """The queues of one broker id; thread-safe, every method holds :attr:`condition`."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.version = 0  # bumped (and waiters notified) on every put and settlement
        self._queues: dict[str, _Queue] = {}
        self._in_flight: dict[str, Stored] = {}
        self._sequence = itertools.count(1)
        self._workers: dict[str, tuple[float, str]] = {}  # the registry: id -> (deadline, info)

    def _queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise QueueNotFound(name) from None

    def _changed(self) -> None:
        self.version += 1
        self.condition.notify_all()

    def declare(self, spec: QueueSpec) -> QueueSpec:
        """Store ``spec`` unless the queue exists; return the stored spec."""
        with self.condition:
            return self._queues.setdefault(spec.name, _Queue(spec)).spec

    def lookup(self, name: str) -> QueueSpec | None:
        with self.condition:
            queue = self._queues.get(name)
            return None if queue is None else queue.spec

    def specs(self) -> list[QueueSpec]:
        with self.condition:
            return [queue.spec for queue in self._queues.values()]

    def count(self, name: str) -> int:
        with self.condition:
            return len(self._queue(name).heap)

    def purge(self, name: str) -> int:
        with self.condition:
            queue = self._queue(name)
            removed, queue.heap = len(queue.heap), []
            return removed

    def delete(self, name: str, *, if_empty: bool = False) -> None:
        """Drop the queue; its messages in flight are dropped when settled."""
        with self.condition:
            queue = self._queue(name)
            if if_empty and (queue.heap or queue.unacked):
                raise QueueNotEmpty(name)
            del self._queues[name]

    def put(
        self, name: str, messages: Sequence[WireMessage], priority: int | None,
        exchange: str = "", routing_key: str | None = None,
    ) -> None:
        """Append ``messages`` in order; a priority above ``max_priority`` ranks as the max."""
        with self.condition:
            queue = self._queue(name)
            stack = queue.spec.queue_type is QueueType.STACK
            rank = _rank(queue.spec, priority or 0)
            key = name if routing_key is None else routing_key
            for message in messages:
                order = -next(self._sequence) if stack else next(self._sequence)
                stored = Stored(message, priority or 0, exchange, key, order, queue)
                heapq.heappush(queue.heap, (-rank, 1, order, stored))
            queue.published += len(messages)
            self._changed()

    def take(self, name: str, *, ack: bool) -> tuple[str, Stored] | None:
        """The next ready message of ``name`` and a new delivery tag, or None. With ``ack`` it
        stays in flight under that tag until :meth:`settle`; without, it is gone for good."""
        with self.condition:
            queue = self._queue(name)
            if not queue.heap:
                return None
            stored = heapq.heappop(queue.heap)[3]
            tag = str(next(self._sequence))
            if ack:
                self._in_flight[tag] = stored
                queue.unacked += 1
            return tag, stored

    def settle(self, tag: str, how: Settlement) -> None:
        """Ack, reject or requeue the message in flight under ``tag``; an unknown or already
        settled tag is ignored. A requeued message goes first in line, in its original order;
        it is dropped if its queue was deleted meanwhile."""
        with self.condition:
            stored = self._in_flight.pop(tag, None)
            if stored is None:
                return
            queue = stored.home
            queue.unacked -= 1
            if how is Settlement.REQUEUE and self._queues.get(queue.spec.name) is queue:
                stored.redelivered = True
                rank = _rank(queue.spec, stored.priority)
                heapq.heappush(queue.heap, (-rank, 0, stored.order, stored))
            self._changed()

    def peek(self, name: str, limit: int) -> list[Stored]:
        """The next ``limit`` ready messages in delivery order, left in the queue."""
        with self.condition:
            return [entry[3] for entry in heapq.nsmallest(limit, self._queue(name).heap)]

    def published_counts(self, names: Sequence[str]) -> dict[str, int]:
        with self.condition:
            return {name: self._queues[name].published for name in names if name in self._queues}

    def announce(self, worker_id: str, info: str, ttl: float) -> None:
        with self.condition:
            self._workers[worker_id] = (time.monotonic() + ttl, info)

    def forget_worker(self, worker_id: str) -> None:
        with self.condition:
            self._workers.pop(worker_id, None)

    def workers(self) -> list[str]:
        """The infos of the workers whose entries have not lapsed."""
        now = time.monotonic()
        with self.condition:
            for worker_id in [key for key, (deadline, _) in self._workers.items() if deadline < now]:
                del self._workers[worker_id]
            return [info for _, info in self._workers.values()]

    def unacked_counts(self) -> dict[str, int]:
        """Messages in flight per queue (queues with none are left out)."""
        with self.condition:
            return {name: queue.unacked for name, queue in self._queues.items() if queue.unacked}

    def wait(self, version: int, timeout: float | None) -> None:
        """Block until :attr:`version` differs from ``version``, or ``timeout`` passes."""
        with self.condition:
            if self.version == version:
                self.condition.wait(timeout)


_brokers: dict[str, Broker] = {}
_brokers_lock = threading.Lock()


def broker_for(broker_id: str) -> Broker:
    """The broker named ``broker_id``, created on first use; shared by the whole process."""
    with _brokers_lock:
        return _brokers.setdefault(broker_id, Broker())


def _delivery(
    queue: str, tag: str, stored: Stored, settle: Callable[[Delivery, Settlement], None] | None,
) -> Delivery:
    """A delivery of a taken message; ``settle`` None when it is not in flight."""
    spec = stored.home.spec
    priority = stored.priority if spec.queue_type is QueueType.PRIORITY else None
    return Delivery(
        queue, stored.message, priority=priority, redelivered=stored.redelivered, tag=tag,
        settle=settle,
    )


class _MemoryConsumer:
    """Deliveries of some queues, round robin, at most ``prefetch`` unsettled (0: no limit)."""

    def __init__(self, backend: MemoryBackend, queues: Sequence[str], prefetch: int) -> None:
        self._backend = backend
        self._broker = backend.broker
        self._queues = list(queues)
        self._prefetch = prefetch
        self._next = 0
        self._held: dict[str, Delivery] = {}
        self._closed = False
        self._woken = False

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._broker.condition:
            while not self._closed:
                taken = self._take(max_count)
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0 or self._woken:
                    self._woken = False
                    return taken
                self._broker.condition.wait(remaining)
            return []

    def wake(self) -> None:
        with self._broker.condition:
            self._woken = True
            self._broker.condition.notify_all()

    def _take(self, max_count: int) -> list[Delivery]:
        room = max_count if not self._prefetch else min(max_count, self._prefetch - len(self._held))
        taken: list[Delivery] = []
        misses = 0
        while len(taken) < room and misses < len(self._queues):
            name = self._queues[self._next]
            self._next = (self._next + 1) % len(self._queues)
            try:
                found = self._broker.take(name, ack=True)
            except QueueNotFound:  # deleted while consumed: it may be declared again
                found = None
            if found is None:
                misses += 1
                continue
            misses = 0
            delivery = _delivery(name, *found, self._settle)
            self._held[found[0]] = delivery
            taken.append(delivery)
        return taken

    def _settle(self, delivery: Delivery, how: Settlement) -> None:
        with self._broker.condition:
            self._held.pop(delivery.tag, None)
            self._broker.settle(delivery.tag, how)

    def set_prefetch(self, prefetch: int) -> None:
        with self._broker.condition:
            self._prefetch = prefetch
            self._broker.condition.notify_all()

    def close(self) -> None:
        with self._broker.condition:
            self._closed = True
            held = list(self._held.values())
            self._broker.condition.notify_all()
        for delivery in held:
            delivery.reject(requeue=True)
        self._backend._forget(self)


class MemoryBackend(WithoutExchanges, CompleteOnReturn):
    """The :class:`~.base.Backend` of the in-process broker ``broker_id``: backends (and
    ``mindtrace-memory`` Kombu connections) with the same id share queues and messages."""

    backend_name = "the in-process backend"

    def __init__(self, broker_id: str) -> None:
        self.broker_id = broker_id
        self.broker = broker_for(broker_id)
        self._held: dict[str, Delivery] = {}  # unsettled get(ack=True) deliveries
        self._consumers: set[_MemoryConsumer] = set()

    def __repr__(self) -> str:
        return f"<MemoryBackend {self.broker_id!r}>"

    def declare(self, spec: QueueSpec) -> QueueSpec:
        return self.broker.declare(spec)

    def lookup(self, name: str) -> QueueSpec | None:
        return self.broker.lookup(name)

    def list_specs(self, candidates: Iterable[str]) -> list[QueueSpec]:
        """Every queue of the broker (it can list them all: ``candidates`` are not needed)."""
        return self.broker.specs()

    def count(self, queue: str) -> int:
        return self.broker.count(queue)

    def purge(self, queue: str) -> int:
        return self.broker.purge(queue)

    def delete(self, queue: str, *, if_empty: bool = False) -> None:
        self.broker.delete(queue, if_empty=if_empty)

    def publish(self, queue: str, messages: Sequence[WireMessage], priority: int | None) -> None:
        """All of ``messages`` or none: the batch is put under one lock."""
        self.broker.put(queue, messages, priority)

    def get(self, queue: str, *, ack: bool) -> Delivery | None:
        with self.broker.condition:
            found = self.broker.take(queue, ack=ack)
            if found is None:
                return None
            if not ack:
                return _delivery(queue, *found, None)
            delivery = self._held[found[0]] = _delivery(queue, *found, self._settle)
            return delivery

    def _settle(self, delivery: Delivery, how: Settlement) -> None:
        with self.broker.condition:
            self._held.pop(delivery.tag, None)
            self.broker.settle(delivery.tag, how)

    def consumer(self, queues: Sequence[str], prefetch: int) -> Consumer:
        """A consumer of existing ``queues`` (``QueueNotFound`` otherwise); ``prefetch`` 0 means
        no limit, as in AMQP."""
        with self.broker.condition:
            for queue in queues:
                if self.broker.lookup(queue) is None:
                    raise QueueNotFound(queue)
            consumer = _MemoryConsumer(self, queues, prefetch)
            self._consumers.add(consumer)
            return consumer

    def _forget(self, consumer: _MemoryConsumer) -> None:
        """Called by a consumer that closed."""
        with self.broker.condition:
            self._consumers.discard(consumer)

    def unacked_counts(self) -> dict[str, int] | None:
        return self.broker.unacked_counts()

    registry_ttl = 30.0

    def peek(self, queue: str, limit: int) -> list[Delivery]:
        return [_delivery(queue, "", stored, None) for stored in self.broker.peek(queue, limit)]

    def published_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        return self.broker.published_counts(queues)

    def consumer_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        return None

    def announce(self, worker_id: str, info: str, ttl: float) -> None:
        self.broker.announce(worker_id, info, ttl)

    def forget_worker(self, worker_id: str) -> None:
        self.broker.forget_worker(worker_id)

    def workers(self) -> list[str | bytes]:
        return list(self.broker.workers())

    def close(self) -> None:
        """Close this backend's consumers and put its unsettled ``get(ack=True)`` deliveries
        back, first in line in their original order. The backend stays usable."""
        with self.broker.condition:
            consumers, held = list(self._consumers), list(self._held.values())
        for consumer in consumers:
            consumer.close()
        for delivery in held:
            delivery.reject(requeue=True)
