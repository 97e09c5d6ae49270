"""The backend seam: what the Orchestrator, the Worker, dead letters and the Celery bridge need
from a broker, and nothing else. Memory, Redis and RabbitMQ each implement it
(:mod:`.memory`, :mod:`.redis`, :mod:`.amqp`); no caller imports a backend module directly.

Contracts, stated once here:

* **Queue specs.** ``declare`` stores a spec unless the queue exists and returns the stored one
  (the caller compares); ``lookup`` returns an existing queue's spec or None; ``list_specs``
  every queue the broker can list (``candidates`` are probed where it cannot).
* **Counting.** ``count`` is the number of ready messages, exact as soon as ``publish`` returned.
* **Publish.** ``publish(queue, messages, priority)`` puts every message, in order, to an
  existing queue. When it returns, every message is on the broker (confirmed on RabbitMQ). On an
  error, a prefix of the batch may already be on the broker; nothing is retried here. A priority
  above the queue's ``max_priority`` is capped at it (as RabbitMQ does).
  ``unconfirmed()`` is the same backend publishing without waiting for the broker (RabbitMQ:
  persistent, unconfirmed, not mandatory -- Celery's guarantee); where a publish is complete
  when the call returns (memory, Redis) it is the backend itself.
* **Get.** ``get(queue, ack=False)`` takes the next ready message out for good (at most once);
  ``get(queue, ack=True)`` takes it in flight: it returns to the queue -- first in line, order
  kept -- unless acknowledged, when the delivery is rejected with ``requeue=True``, the backend
  closes, or (Redis) the holder's lease expires.
* **Consume.** ``consumer(queues, prefetch)`` returns a :class:`Consumer`; its deliveries can be
  settled (``ack``, ``reject``, ``reject(requeue=True)``) from any thread.
* **Errors.** Every broker exception leaves through :func:`~.errors.translate_errors`: callers
  see only this package's errors (the table in :mod:`.errors`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, TypeVar

from ..errors import UnsupportedOperation
from ..queues import QueueSpec

__all__ = [
    "UNPARSEABLE_CONTENT_TYPE",
    "UNPARSEABLE_REASON",
    "Backend",
    "CompleteOnReturn",
    "Consumer",
    "Delivery",
    "Settlement",
    "WireMessage",
    "WithoutExchanges",
    "WithoutRegistry",
]

_B = TypeVar("_B")

#: Content type given to raw broker data that is not a Kombu message; no consumer accepts it, so
#: it is dead-lettered with its bytes intact instead of being dropped.
UNPARSEABLE_CONTENT_TYPE = "application/x-mindtrace-unparseable"
#: Header of such a message: what is wrong with the data (not JSON, invalid base64...).
UNPARSEABLE_REASON = "x-mindtrace-unparseable"


@dataclass(frozen=True)
class WireMessage:
    """An encoded message as it travels: body bytes, their content type and encoding, headers,
    and extra properties (Celery's ``correlation_id``, ``reply_to``...)."""

    body: bytes
    content_type: str
    content_encoding: str
    headers: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)


class Settlement(str, Enum):
    """What happens to a delivery."""

    ACK = "ack"  # done: it leaves the broker
    REJECT = "reject"  # dropped (the caller dead-lettered it first, or does not want it)
    REQUEUE = "requeue"  # back to its queue, first in line


class Delivery:
    """One message taken from a queue. Settle it once, from any thread.

    Attributes:
        queue: the queue it came from.
        message: body, content type, encoding, headers, properties.
        priority: the priority it was published with (None where the queue has none).
        redelivered: it was delivered before (a restore, a requeue, an expired lease).
    """

    __slots__ = ("queue", "message", "priority", "redelivered", "tag", "job_id", "_settle", "_lock", "settled")

    def __init__(
        self,
        queue: str,
        message: WireMessage,
        *,
        priority: int | None = None,
        redelivered: bool = False,
        tag: Any = None,
        settle: Callable[[Delivery, Settlement], None] | None = None,
    ) -> None:
        self.queue = queue
        self.message = message
        self.priority = priority
        self.redelivered = redelivered
        self.tag = tag  # the backend's handle
        self.job_id: str | None = None  # the job it carries, once its consumer decoded it
        self._settle = settle
        self._lock = threading.Lock()
        self.settled: Settlement | None = None if settle is not None else Settlement.ACK

    def __repr__(self) -> str:
        return f"<Delivery {self.queue!r} {self.message.content_type} {len(self.message.body)} bytes>"

    @property
    def headers(self) -> Mapping[str, Any]:
        return self.message.headers

    def ack(self) -> None:
        """Done with it: it leaves the broker. A second settlement is ignored."""
        self._finish(Settlement.ACK)

    def reject(self, requeue: bool = False) -> None:
        """Drop it, or with ``requeue`` put it back first in line."""
        self._finish(Settlement.REQUEUE if requeue else Settlement.REJECT)

    def _finish(self, how: Settlement) -> None:
        with self._lock:
            if self.settled is not None:
                return
            self.settled = how
        assert self._settle is not None
        self._settle(self, how)


class WithoutExchanges:
    """The exchange methods of a backend that has no exchanges: each raises
    :class:`~mindtrace_kombu.errors.UnsupportedOperation`."""

    backend_name = "this backend"

    def _unsupported(self) -> UnsupportedOperation:
        return UnsupportedOperation(
            self.backend_name, "exchanges", "publish to queues by name, or use RabbitMQ for exchange routing"
        )

    def declare_exchange(self, name: str, exchange_type: str, *, durable: bool, auto_delete: bool) -> None:
        raise self._unsupported()

    def exchange_exists(self, name: str) -> bool:
        raise self._unsupported()

    def delete_exchange(self, name: str) -> None:
        raise self._unsupported()

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        raise self._unsupported()

    def publish_to_exchange(
        self, exchange: str, routing_key: str, messages: Sequence[WireMessage], priority: int | None, *, label: str
    ) -> None:
        raise self._unsupported()


class CompleteOnReturn:
    """A backend whose publish is complete when the call returns (memory, Redis): there is no
    confirmation to skip, so its unconfirmed view is itself."""

    def unconfirmed(self: _B) -> _B:
        return self


class WithoutRegistry:
    """The registry methods of a backend that keeps no worker registry: announcing does nothing
    and listing raises :class:`~mindtrace_kombu.errors.UnsupportedOperation`."""

    backend_name = "this backend"
    registry_ttl = 30.0

    def announce(self, worker_id: str, info: str, ttl: float) -> None:
        """Nothing to do: no registry."""

    def forget_worker(self, worker_id: str) -> None:
        """Nothing to do: no registry."""

    def workers(self) -> list[str | bytes]:
        raise UnsupportedOperation(
            self.backend_name, "the worker registry",
            "the broker's consumer counts are in consumer_counts() and `mindtrace-jobs queues`",
        )


class Consumer(Protocol):
    """Deliveries of some queues, pushed or popped by the backend, with acknowledgements."""

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        """Up to ``max_count`` deliveries, in queue order; waits up to ``timeout`` seconds for
        the first (without polling the broker), returns ``[]`` when none came."""

    def set_prefetch(self, prefetch: int) -> None:
        """Hold at most ``prefetch`` unsettled deliveries from now on."""

    def wake(self) -> None:
        """Make the ``fetch`` waiting now, or else the next one, return at once with what
        there is (a worker stopping); from any thread."""

    def close(self) -> None:
        """Stop consuming; deliveries not settled go back to their queues, first in line."""


class Backend(Protocol):
    """One broker, shared by the threads of one orchestrator; thread-safe."""

    def declare(self, spec: QueueSpec) -> QueueSpec:
        """Create the queue unless it exists; return the spec the broker now holds."""

    def lookup(self, name: str) -> QueueSpec | None:
        """The spec of an existing queue, or None."""

    def list_specs(self, candidates: Iterable[str]) -> list[QueueSpec]:
        """Every queue the broker can list; ``candidates`` are probed where it cannot."""

    def count(self, queue: str) -> int:
        """Ready messages of ``queue``. Raises ``QueueNotFound``."""

    def purge(self, queue: str) -> int:
        """Drop the ready messages; returns how many. Raises ``QueueNotFound``."""

    def delete(self, queue: str, *, if_empty: bool = False) -> None:
        """Delete the queue and its messages. Raises ``QueueNotFound``; with ``if_empty``, a
        queue holding messages is kept and ``QueueNotEmpty`` raised."""

    def publish(self, queue: str, messages: Sequence[WireMessage], priority: int | None) -> None:
        """Put ``messages`` in order (see the module docstring). Raises ``QueueNotFound``."""

    def unconfirmed(self) -> Backend:
        """This backend, publishing without waiting for the broker's confirmation."""

    def get(self, queue: str, *, ack: bool) -> Delivery | None:
        """The next ready message, or None (see the module docstring)."""

    def consumer(self, queues: Sequence[str], prefetch: int) -> Consumer:
        """A consumer of ``queues`` holding at most ``prefetch`` unsettled deliveries."""

    def unacked_counts(self) -> dict[str, int] | None:
        """Deliveries in flight per queue, or None where the broker cannot tell."""

    # -- inspection ------------------------------------------------------------------------------

    @property
    def registry_ttl(self) -> float:
        """Seconds a worker stays in the registry without renewing its entry (:mod:`..registry`)."""

    def peek(self, queue: str, limit: int) -> list[Delivery]:
        """Up to ``limit`` ready messages in delivery order, left in the queue (their
        deliveries cannot be settled). Raises ``QueueNotFound``."""

    def published_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        """Messages ever published to each queue (a counter, for rates), or None where the
        broker keeps none; missing queues are left out."""

    def consumer_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        """Consumers per queue as the broker counts them, or None where it does not (the
        registry's workers count then)."""

    def announce(self, worker_id: str, info: str, ttl: float) -> None:
        """List a worker (``info``: its JSON) for ``ttl`` seconds unless announced again."""

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker from the registry."""

    def workers(self) -> list[str | bytes]:
        """The JSON infos of the workers listed now. Raises ``UnsupportedOperation`` where the
        backend keeps no registry."""

    # -- exchanges (RabbitMQ; the other backends are :class:`WithoutExchanges`) -----------------

    def declare_exchange(self, name: str, exchange_type: str, *, durable: bool, auto_delete: bool) -> None:
        """Create the exchange unless it exists."""

    def exchange_exists(self, name: str) -> bool:
        """Whether the exchange exists."""

    def delete_exchange(self, name: str) -> None:
        """Delete the exchange (and its bindings). Raises ``ExchangeNotFound``."""

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Route ``exchange``'s messages with ``routing_key`` to ``queue``. Raises
        ``QueueNotFound``, ``ExchangeNotFound``."""

    def publish_to_exchange(
        self, exchange: str, routing_key: str, messages: Sequence[WireMessage], priority: int | None, *, label: str
    ) -> None:
        """Like :meth:`publish`, through ``exchange``; a message no queue is bound for raises
        ``QueueNotFound(label)``."""

    def close(self) -> None:
        """Release every connection; deliveries not settled go back to their queues."""
