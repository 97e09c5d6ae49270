"""Queue specifications: name, type and priority range, validated before any broker call.

A :class:`QueueSpec` travels to the broker as ordinary ``queue_declare`` arguments, so the same
Kombu call declares a queue on every transport:

============================  ===================================================================
spec                          arguments
============================  ===================================================================
fifo                          none
priority                      ``x-max-priority: <max>`` (native on RabbitMQ)
stack                         ``x-mindtrace-queue-type: stack`` (read by this package's transports)
replicated fifo               ``x-queue-type: quorum`` (RabbitMQ; what Kombu and Celery declare)
============================  ===================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from .errors import InvalidArgument, InvalidPriority, InvalidQueueName, UnsupportedQueueType

__all__ = [
    "DEFAULT_MAX_PRIORITY",
    "MAX_PRIORITY_LIMIT",
    "PRIORITY_ARGUMENT",
    "QUEUE_TYPE_ARGUMENT",
    "QueueSpec",
    "QueueType",
    "dead_letter_queue_name",
    "validate_queue_name",
]

DEFAULT_MAX_PRIORITY = 10
MAX_PRIORITY_LIMIT = 255
_MAX_NAME_BYTES = 255
_TYPE_ARGUMENT = "x-mindtrace-queue-type"
_VALID_NAMES_CACHE = 10_000  # names already checked: publish validates in O(1)
_valid_names: set[str] = set()
#: RabbitMQ's (and this package's) priority queue argument.
PRIORITY_ARGUMENT = "x-max-priority"
#: RabbitMQ's queue type argument: ``classic`` (the default), ``quorum``, ``stream``.
QUEUE_TYPE_ARGUMENT = "x-queue-type"


class QueueType(str, Enum):
    """Delivery order of a queue."""

    FIFO = "fifo"
    STACK = "stack"
    PRIORITY = "priority"


def validate_queue_name(name: object) -> str:
    """Return ``name`` if every broker accepts it, else raise :class:`InvalidQueueName`."""
    if name in _valid_names:
        return name  # type: ignore[return-value]
    if not isinstance(name, str) or not name:
        raise InvalidQueueName(name, "a queue name is a non-empty string")
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        raise InvalidQueueName(name, f"longer than {_MAX_NAME_BYTES} bytes")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise InvalidQueueName(name, "control characters are not allowed")
    if name.startswith("amq."):
        raise InvalidQueueName(name, "the 'amq.' prefix is reserved by AMQP brokers")
    if len(_valid_names) < _VALID_NAMES_CACHE:
        _valid_names.add(name)
    return name


def dead_letter_queue_name(name: str) -> str:
    """Name of the dead-letter queue that receives the undecodable or failed jobs of ``name``."""
    return f"{name}.dlq"


@dataclass(frozen=True)
class QueueSpec:
    """A validated queue declaration, or what the broker reports of an existing queue."""

    name: str
    queue_type: QueueType = QueueType.FIFO
    max_priority: int | None = None
    #: Kept on several broker nodes, so it outlives the loss of one (a RabbitMQ quorum queue).
    replicated: bool = False
    #: For a queue declared elsewhere: what it has that no spec of this package declares, either
    #: a RabbitMQ queue type (``"stream"``) or the first argument RabbitMQ named (``"x-max-length"``).
    foreign: str | None = None

    @classmethod
    def create(
        cls, name: str, queue_type: str = "fifo", max_priority: int | None = None, replicated: bool = False
    ) -> QueueSpec:
        """Validate user input into a spec.

        ``max_priority`` turns a fifo declaration into a priority queue (the README's RabbitMQ
        idiom ``declare_queue(name, max_priority=255)``); it defaults to 10 for priority queues.
        Whether the backend can replicate the queue is the client's check (``check_supported``).

        Raises:
            InvalidQueueName, InvalidPriority, UnsupportedQueueType (an unknown queue type),
            InvalidArgument (``replicated`` not a bool).
        """
        validate_queue_name(name)
        if not isinstance(replicated, bool):
            raise InvalidArgument("replicated", replicated, "it must be True or False")
        try:
            kind = QueueType(queue_type)
        except ValueError:
            choices = ", ".join(repr(t.value) for t in QueueType)
            raise UnsupportedQueueType(name, str(queue_type), "mindtrace-kombu", f"use one of {choices}") from None
        if max_priority is not None:
            if kind is QueueType.STACK:
                raise InvalidPriority(name, max_priority, "stack queues have no priorities")
            if isinstance(max_priority, bool) or not isinstance(max_priority, int) or not (
                1 <= max_priority <= MAX_PRIORITY_LIMIT
            ):
                raise InvalidPriority(name, max_priority, f"max_priority must be an int in 1..{MAX_PRIORITY_LIMIT}")
            kind = QueueType.PRIORITY
        elif kind is QueueType.PRIORITY:
            max_priority = DEFAULT_MAX_PRIORITY
        return cls(name, kind, max_priority, replicated)

    @property
    def foreign_type(self) -> str | None:
        """The RabbitMQ queue type of a queue declared elsewhere when this package declares no
        queue of that type (``stream``), else None."""
        return self.foreign if self.foreign is not None and not self.foreign.startswith("x-") else None

    @property
    def kind(self) -> str:
        """The queue's type as listed: ``fifo``, ``priority``, ``stack``, ``quorum``, a foreign
        type (``stream``), or ``classic with arguments`` / ``quorum with arguments``."""
        if self.foreign is None:
            return "quorum" if self.replicated else self.queue_type.value
        return self.foreign_type or f"{'quorum' if self.replicated else 'classic'} with arguments"

    def describe(self) -> str:
        """Human form used in error messages, e.g. ``priority(max_priority=10)``, ``quorum``,
        ``classic with arguments (x-max-length)``."""
        if self.queue_type is QueueType.PRIORITY and self.foreign is None:
            return f"priority(max_priority={self.max_priority})"
        if self.foreign is not None and self.foreign_type is None:
            return f"{self.kind} ({self.foreign})"
        return self.kind

    def arguments(self) -> dict[str, Any]:
        """The ``queue_declare`` arguments that carry this spec to the broker (the table above)."""
        if self.replicated:
            return {QUEUE_TYPE_ARGUMENT: "quorum"}
        if self.queue_type is QueueType.PRIORITY:
            return {PRIORITY_ARGUMENT: self.max_priority}
        if self.queue_type is QueueType.STACK:
            return {_TYPE_ARGUMENT: QueueType.STACK.value}
        return {}

    @classmethod
    def from_arguments(cls, name: str, arguments: Mapping[str, Any] | None) -> QueueSpec:
        """Inverse of :meth:`arguments` for the transports of this package, which receive
        ``queue_declare`` calls; RabbitMQ's own arguments (``x-queue-type``...) are ignored, as
        those single-copy stores always did."""
        arguments = arguments or {}
        if PRIORITY_ARGUMENT in arguments:
            return cls(name, QueueType.PRIORITY, int(arguments[PRIORITY_ARGUMENT]))
        return cls(name, QueueType(arguments.get(_TYPE_ARGUMENT, QueueType.FIFO.value)))

    def validate_priority(self, priority: object) -> int | None:
        """Return the priority to send, or raise :class:`InvalidPriority` before anything is sent."""
        if priority is None:
            return 0 if self.queue_type is QueueType.PRIORITY else None
        if self.replicated:
            raise InvalidPriority(self.name, priority, f"it is a {self.kind} queue, which has no priorities")
        if self.queue_type is not QueueType.PRIORITY:
            raise InvalidPriority(
                self.name, priority,
                f"it is a {self.queue_type.value} queue; declare it with queue_type='priority' to use priorities",
            )
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidPriority(self.name, priority, "a priority is an int")
        assert self.max_priority is not None
        if not 0 <= priority <= self.max_priority:
            raise InvalidPriority(self.name, priority, f"allowed range is 0..{self.max_priority}")
        return priority
