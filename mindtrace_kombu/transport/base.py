"""What this package's Kombu transports share: AMQP-like answers and the stored payload format.

Kombu's virtual ``Channel`` knows queues only through its primitives (``_new_queue``, ``_put``,
``_get``, ``_size``, ``_purge``, ``_delete``, ``_has_queue``). :class:`ExactOrderChannelMixin`
adds what exact semantics need on top:

* the queue's :class:`~mindtrace_kombu.queues.QueueSpec` is stored by the broker at declare time
  (``_store_spec``) and read back by any process (``queue_spec``);
* re-declaring with another spec fails with py-amqp's ``PreconditionFailed`` (406), as RabbitMQ
  does; primitives on an undeclared queue fail with its ``NotFound`` (404);
* a passive declare is one ``_size`` call, which raises the 404 itself;
* ``queue_delete`` deletes by name, whoever declared the queue, with its bindings
  (``_forget_bindings``); ``if_empty`` keeps a queue holding ready or unacknowledged messages;
* a queue consumed with ``no_ack`` is taken from for good (``_no_ack_queues``), the others
  under acknowledgement.

Stored payloads are Kombu's virtual-transport JSON (:mod:`mindtrace_kombu.backends.wire`,
whose ``read_payload`` reads one); :func:`unparseable_message` wraps whatever is not one so
that it is dead-lettered instead of dropped.
"""

from __future__ import annotations

import base64
from contextlib import contextmanager
from typing import Any, Iterator

from amqp.exceptions import NotFound, PreconditionFailed
from amqp.protocol import queue_declare_ok_t

from ..backends.base import UNPARSEABLE_CONTENT_TYPE, UNPARSEABLE_REASON
from ..backends.wire import delivery_tag
from ..errors import QueueNotEmpty, QueueNotFound
from ..queues import QueueSpec

__all__ = [
    "UNPARSEABLE_CONTENT_TYPE",
    "ExactOrderChannelMixin",
    "not_found_as_404",
    "precondition_failed",
    "queue_not_found",
    "unparseable_message",
]


def queue_not_found(queue: str) -> NotFound:
    """The 404 every primitive raises for an undeclared queue (same class as py-amqp's)."""
    return NotFound(f"NOT_FOUND - no queue {queue!r}", (50, 10), "Queue.declare")


@contextmanager
def not_found_as_404(queue: str) -> Iterator[None]:
    """The store's :class:`~mindtrace_kombu.errors.QueueNotFound` as py-amqp's 404, which Kombu
    and Celery expect from a transport."""
    try:
        yield
    except QueueNotFound:
        raise queue_not_found(queue) from None


def precondition_failed(reason: str) -> PreconditionFailed:
    """The 406 of a declaration that does not match the queue (same class as py-amqp's)."""
    return PreconditionFailed(f"PRECONDITION_FAILED - {reason}", (50, 10), "Queue.declare")


def unparseable_message(raw: bytes, queue: str, tag: str, reason: str) -> dict[str, Any]:
    """Wrap raw bytes found in ``queue`` that are not a Kombu message into one, the body
    base64-encoded, unchanged, ``reason`` in a header; no consumer accepts its content type."""
    return {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-type": UNPARSEABLE_CONTENT_TYPE,
        "content-encoding": "binary",
        "headers": {UNPARSEABLE_REASON: reason},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": tag,
            "delivery_info": {"exchange": "", "routing_key": queue},
        },
    }


class ExactOrderChannelMixin:
    """Spec storage and AMQP-like errors for a virtual Channel; mix in before the Channel."""

    def _store_spec(self, spec: QueueSpec) -> QueueSpec:
        """Store ``spec`` unless the queue exists; return the spec the broker now holds."""
        raise NotImplementedError

    def queue_spec(self, queue: str) -> QueueSpec | None:
        """Return the stored spec of ``queue``, or None when it was never declared."""
        raise NotImplementedError

    def _delete(self, queue: str, *args: Any, if_empty: bool = False, **kwargs: Any) -> None:
        """Delete ``queue`` and its messages; the store's ``QueueNotFound``/``QueueNotEmpty``."""
        raise NotImplementedError

    def _forget_bindings(self, queue: str) -> None:
        """Remove the bindings of a deleted ``queue`` (Kombu's virtual channel leaves them)."""
        self.state.queue_bindings_delete(queue)  # type: ignore[attr-defined]

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> None:
        """Delete ``queue`` by name, whoever declared it, with its bindings.

        Replaces Kombu's, which deletes only through this process's bindings and leaves them
        behind. A missing queue is ignored, as on RabbitMQ; with ``if_empty``, a queue holding
        ready or unacknowledged messages is kept. ``if_unused`` is ignored, as Kombu does.
        """
        try:
            self._delete(queue, if_empty=if_empty)
        except QueueNotEmpty:
            return
        except QueueNotFound:
            pass
        self._forget_bindings(queue)

    @property
    def _no_ack_queues(self) -> set[str]:
        """The queues this channel consumes with ``no_ack``: taken from for good."""
        return self.__dict__.setdefault("_mindtrace_no_ack_queues", set())  # type: ignore[no-any-return]

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Kombu's, noting whether ``queue`` is consumed with ``no_ack``."""
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]

    def basic_cancel(self, consumer_tag: str) -> Any:
        """Kombu's; a queue no longer consumed here forgets its ``no_ack``."""
        queue = self._tag_to_queue.get(consumer_tag)  # type: ignore[attr-defined]
        result = super().basic_cancel(consumer_tag)  # type: ignore[misc]
        if queue not in self._active_queues:  # type: ignore[attr-defined]
            self._no_ack_queues.discard(queue)
        return result

    def _next_delivery_tag(self) -> str:
        """A delivery tag unique across processes (Kombu draws a uuid4 per message)."""
        return delivery_tag()

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        """Store the spec the declaration's arguments ask for; 406 when the queue has another.
        Kombu's own bookkeeping (``auto_delete``, ``x-expires``) follows."""
        try:
            requested = QueueSpec.from_arguments(queue, kwargs.get("arguments"))
        except (TypeError, ValueError) as exc:
            raise precondition_failed(str(exc)) from None
        existing = self._store_spec(requested)
        if existing != requested:
            raise precondition_failed(
                f"queue {queue!r} exists as {existing.describe()}, not {requested.describe()}",
            )
        super()._new_queue(queue, **kwargs)  # type: ignore[misc]

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self.queue_spec(queue) is not None

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        """Declare ``queue``; a passive declare is one ``_size`` call (which raises 404 itself)."""
        if passive and queue:
            return queue_declare_ok_t(queue, self._size(queue), 0)  # type: ignore[attr-defined]
        return super().queue_declare(queue, passive=passive, **kwargs)  # type: ignore[misc]
