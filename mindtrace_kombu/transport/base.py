"""Behaviour shared by this package's virtual transports (memory and Redis).

Kombu's virtual ``Channel`` knows queues only through its primitives (``_new_queue``, ``_put``,
``_get``, ``_size``, ``_purge``, ``_delete``, ``_has_queue``). :class:`ExactOrderChannelMixin`
adds what exact semantics need on top, once for both transports:

* the queue's :class:`~mindtrace_kombu.queues.QueueSpec` is stored by the broker at declare time
  (``_store_spec``) and read back by any process (``queue_spec``);
* re-declaring with another spec fails with ``PreconditionFailed`` (406), as RabbitMQ does;
* primitives on an undeclared queue fail with ``NotFound`` (404), as RabbitMQ does;
* ``queue_delete`` deletes by name, not through the bindings this process happens to know.
"""

from __future__ import annotations

import base64
import itertools
import os
import uuid
from typing import Any

from amqp.exceptions import NotFound, PreconditionFailed
from amqp.protocol import queue_declare_ok_t

from ..queues import QueueSpec

__all__ = ["UNPARSEABLE_CONTENT_TYPE", "ExactOrderChannelMixin", "queue_not_found", "unparseable_message"]

#: Content type given to raw broker data that is not a Kombu message; no consumer accepts it,
#: so it is dead-lettered with its bytes intact instead of being dropped.
UNPARSEABLE_CONTENT_TYPE = "application/x-mindtrace-unparseable"


def queue_not_found(queue: str) -> NotFound:
    """The 404 every primitive raises for an undeclared queue (same class as py-amqp's)."""
    return NotFound(f"NOT_FOUND - no queue {queue!r}", (50, 10), "Queue.declare")


def unparseable_message(raw: bytes, queue: str, delivery_tag: str) -> dict[str, Any]:
    """Wrap raw bytes found in ``queue`` that are not a Kombu message into one, the body
    base64-encoded, unchanged."""
    return {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-type": UNPARSEABLE_CONTENT_TYPE,
        "content-encoding": "binary",
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": delivery_tag,
            "delivery_info": {"exchange": "", "routing_key": queue},
        },
    }


_TAG_PREFIX = uuid.uuid4().hex[:16]
_tag_counter = itertools.count(1)


class ExactOrderChannelMixin:
    """Spec storage and AMQP-like errors for a virtual Channel; mix in before the Channel."""

    def _store_spec(self, spec: QueueSpec) -> QueueSpec:
        """Store ``spec`` unless the queue exists; return the spec the broker now holds."""
        raise NotImplementedError

    def queue_spec(self, queue: str) -> QueueSpec | None:
        """Return the stored spec of ``queue``, or None when it was never declared."""
        raise NotImplementedError

    def queue_specs(self) -> list[QueueSpec]:
        """Every queue declared on this broker through this package's transports."""
        raise NotImplementedError

    def unacked_counts(self) -> dict[str, int] | None:
        """Delivered, unacknowledged messages per queue, or None when the broker cannot tell."""
        return None

    def _next_delivery_tag(self) -> str:
        """A delivery tag unique across processes: a random per-process prefix, the process id
        (a forked child differs) and a counter. Kombu draws a uuid4 per message instead."""
        return f"{_TAG_PREFIX}.{os.getpid()}.{next(_tag_counter)}"

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        requested = QueueSpec.from_arguments(queue, kwargs.get("arguments"))
        existing = self._store_spec(requested)
        if existing != requested:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - queue {queue!r} exists as {existing.describe()}, "
                f"not {requested.describe()}",
                (50, 10), "Queue.declare",
            )
        super()._new_queue(queue, **kwargs)  # type: ignore[misc]  # Kombu's auto_delete / x-expires

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self.queue_spec(queue) is not None

    def queue_declare(self, queue: str, passive: bool = False, **kwargs: Any) -> queue_declare_ok_t:
        """Declare queue; a passive declare is one ``_size`` call (which raises 404 itself)."""
        if passive:
            return queue_declare_ok_t(queue, self._size(queue), 0)  # type: ignore[attr-defined]
        return super().queue_declare(queue, passive=False, **kwargs)  # type: ignore[misc]

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> None:
        """Delete ``queue`` by name.

        Kombu's virtual ``queue_delete`` only deletes through the bindings recorded in this
        process, so a queue declared elsewhere would survive; here ``_delete`` removes it whoever
        declared it. Deleting a missing queue does nothing, as on RabbitMQ.
        """
        try:
            self._delete(queue)  # type: ignore[attr-defined]
        except NotFound:
            pass
        self.state.queue_bindings_delete(queue)  # type: ignore[attr-defined]
