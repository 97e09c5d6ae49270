"""In-process transport with exact fifo, stack and priority order.

Extends Kombu's memory transport. Every queue is a binary heap ordered by a key that encodes its
type, so all three types share one O(log n) code path:

* fifo: ``(0, seq)``; stack: ``(0, -seq)``; priority: ``(-priority, seq)``
* a redelivered (restored) message negates ``seq``: it goes first among its equals, as on Redis

State lives per broker id, the connection's virtual host (``memory:///my_app``): connections
with the same broker id share queues, different ids do not. One lock per broker makes every
primitive atomic across threads.

Connection string: ``mindtrace-memory:///<broker_id>`` (or ``transport="mindtrace-memory"``).
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

from kombu.transport import memory, virtual

from ..queues import QueueSpec, QueueType
from .base import ExactOrderChannelMixin, queue_not_found

__all__ = ["Channel", "Transport"]

_HeapItem = tuple[int, int, dict[str, Any]]
_IDLE_WAIT = 1.0  # re-check at least this often (a consumer added elsewhere, prefetch freed)


@dataclass
class _HeapQueue:
    spec: QueueSpec
    items: list[_HeapItem] = field(default_factory=list)

    def sort_key(self, priority: int, seq: int, redelivered: bool) -> tuple[int, int]:
        """Heap key; a redelivered message goes before the others of its rank, as on Redis."""
        if self.spec.queue_type is QueueType.STACK or redelivered:
            seq = -seq
        return (-priority if self.spec.queue_type is QueueType.PRIORITY else 0, seq)


@dataclass
class _Broker:
    """The queues of one broker id."""

    lock: threading.Condition = field(default_factory=threading.Condition)
    queues: dict[str, _HeapQueue] = field(default_factory=dict)
    puts: int = 0  # bumped (and waiters notified) on every put
    seq: itertools.count[int] = field(default_factory=itertools.count)
    state: virtual.BrokerState = field(default_factory=virtual.BrokerState)


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def _broker_for(broker_id: str) -> _Broker:
    with _brokers_lock:
        return _brokers.setdefault(broker_id, _Broker())


class Channel(ExactOrderChannelMixin, virtual.Channel):  # type: ignore[misc]
    """In-process channel with exact queue order."""

    supports_fanout = False
    body_encoding = None  # messages stay in this process: no base64 round trip

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.broker: _Broker = connection.broker

    def _queue(self, queue: str) -> _HeapQueue:
        try:
            return self.broker.queues[queue]
        except KeyError:
            raise queue_not_found(queue) from None

    def _store_spec(self, spec: QueueSpec) -> QueueSpec:
        with self.broker.lock:
            return self.broker.queues.setdefault(spec.name, _HeapQueue(spec)).spec

    def queue_spec(self, queue: str) -> QueueSpec | None:
        found = self.broker.queues.get(queue)
        return None if found is None else found.spec

    def queue_specs(self) -> list[QueueSpec]:
        with self.broker.lock:
            return [heap.spec for heap in self.broker.queues.values()]

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        priority = message["properties"].get("priority") or 0
        with self.broker.lock:
            heap = self._queue(queue)
            key = heap.sort_key(priority, next(self.broker.seq), bool(message.get("redelivered")))
            heapq.heappush(heap.items, (*key, message))
            self.broker.puts += 1
            self.broker.lock.notify_all()

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        with self.broker.lock:
            items = self._queue(queue).items
            if not items:
                raise Empty()
            return heapq.heappop(items)[2]

    def _size(self, queue: str) -> int:
        return len(self._queue(queue).items)

    def _purge(self, queue: str) -> int:
        with self.broker.lock:
            heap = self._queue(queue)
            removed, heap.items = len(heap.items), []
            return removed

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        with self.broker.lock:
            if self.broker.queues.pop(queue, None) is None:
                raise queue_not_found(queue)


class Transport(memory.Transport):  # type: ignore[misc]
    """In-process transport; the virtual host names the broker."""

    Channel = Channel
    driver_name = "mindtrace-memory"

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.broker = _broker_for(client.virtual_host or "/")
        self.state = self.broker.state

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver one message to a consumer; sleeps until a put instead of Kombu's fixed poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.broker.lock:
                seen = self.broker.puts
            try:
                self.cycle.get(self._deliver, timeout=0)
                return
            except Empty:
                pass
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise socket.timeout()
            with self.broker.lock:
                if self.broker.puts == seen:  # nothing arrived since the attempt: wait for a put
                    self.broker.lock.wait(min(remaining or _IDLE_WAIT, _IDLE_WAIT))
