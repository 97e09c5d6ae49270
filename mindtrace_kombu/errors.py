"""The exception hierarchy. Every error derives from :class:`JobsError` and from the built-in a
caller would naturally catch::

    JobsError
    ├── QueueNotFound           (KeyError)         the queue was never declared, or was deleted
    ├── QueueTypeMismatch       (ValueError)       re-declared with another type or max_priority
    │                                              (``QueueAlreadyExists`` is the same class)
    ├── QueueNotEmpty           (ValueError)       delete(if_empty=True) on a queue holding messages
    ├── UnsupportedQueueType    (ValueError)       the backend cannot provide this queue type
    ├── InvalidPriority         (ValueError)       priority out of range, not an int, or on a non-priority queue
    ├── InvalidQueueName        (ValueError)       empty, too long, control characters, ``amq.`` prefix
    ├── InvalidArgument         (ValueError)       a timeout, count or limit out of range (NaN, negative, 0 workers)
    ├── JobEncodeError          (ValueError)       a job cannot be serialized; nothing of the batch was sent
    ├── JobDecodeError          (ValueError)       a message is not a job; it was moved to the dead-letter queue
    └── BrokerUnavailable       (ConnectionError)  the broker cannot be reached within the configured time

Messages name the queue and the fix; URLs in messages always have their password masked.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "InvalidArgument",
    "InvalidPriority",
    "InvalidQueueName",
    "JobDecodeError",
    "JobEncodeError",
    "JobsError",
    "QueueAlreadyExists",
    "QueueNotEmpty",
    "QueueNotFound",
    "QueueTypeMismatch",
    "UnsupportedQueueType",
]


class JobsError(Exception):
    """Base class of every error raised by mindtrace-kombu."""


class QueueNotFound(JobsError, KeyError):
    """The queue does not exist on the broker."""

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        super().__init__(
            f"queue {queue_name!r} does not exist: declare it first with "
            f"declare_queue({queue_name!r}) or use submit() to declare routed queues"
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class QueueTypeMismatch(JobsError, ValueError):
    """The queue exists with another type or max_priority than requested."""

    def __init__(self, queue_name: str, existing: str, requested: str) -> None:
        self.queue_name = queue_name
        self.existing = existing
        self.requested = requested
        super().__init__(
            f"queue {queue_name!r} already exists as {existing}, not {requested}: "
            f"pass force=True to delete and re-create it (its messages are dropped)"
        )


#: Alias of :class:`QueueTypeMismatch` for callers that catch it by this name. The same class,
#: not a subclass: ``except QueueAlreadyExists`` must catch the mismatch that is raised.
QueueAlreadyExists = QueueTypeMismatch


class QueueNotEmpty(JobsError, ValueError):
    """``delete_queue(..., if_empty=True)`` on a queue that holds messages; it was kept."""

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        super().__init__(
            f"queue {queue_name!r} is not empty, so it was kept: purge it first, or delete it "
            f"without if_empty to drop its messages"
        )


class UnsupportedQueueType(JobsError, ValueError):
    """The backend cannot provide the requested queue type."""

    def __init__(self, queue_name: str, queue_type: str, backend: str, alternatives: str) -> None:
        self.queue_name = queue_name
        self.queue_type = queue_type
        self.backend = backend
        super().__init__(
            f"queue {queue_name!r}: {backend} does not support {queue_type!r} queues; {alternatives}"
        )


class InvalidPriority(JobsError, ValueError):
    """The priority is not valid for the queue."""

    def __init__(self, queue_name: str, priority: object, reason: str) -> None:
        self.queue_name = queue_name
        self.priority = priority
        super().__init__(f"invalid priority {priority!r} for queue {queue_name!r}: {reason}")


class InvalidQueueName(JobsError, ValueError):
    """The queue name cannot be used on a broker."""

    def __init__(self, queue_name: object, reason: str) -> None:
        self.queue_name = queue_name
        super().__init__(f"invalid queue name {queue_name!r}: {reason}")


class InvalidArgument(JobsError, ValueError):
    """A number or option is out of range: a timeout that is NaN, infinite or negative, a
    prefetch or concurrency below 1, ..."""

    def __init__(self, name: str, value: object, requirement: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid {name} {value!r}: {requirement}")


class JobEncodeError(JobsError, ValueError):
    """A job cannot be serialized; no job of its batch was sent."""

    def __init__(self, queue_name: str, job_id: str, reason: str) -> None:
        self.queue_name = queue_name
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"job {job_id!r} for {queue_name!r} cannot be encoded ({reason}); nothing was sent")


class JobDecodeError(JobsError, ValueError):
    """A message could not be decoded as a job; it was moved to the dead-letter queue."""

    def __init__(self, queue_name: str, reason: str, dead_letter_queue: str | None = None) -> None:
        self.queue_name = queue_name
        self.reason = reason
        self.dead_letter_queue = dead_letter_queue
        where = f"; it was moved to {dead_letter_queue!r}" if dead_letter_queue else ""
        super().__init__(f"message on {queue_name!r} is not a valid job ({reason}){where}")


class BrokerUnavailable(JobsError, ConnectionError):
    """The broker could not be reached in time."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(
            f"broker {url} is unavailable: {reason}; check that it is running and reachable, "
            f"or raise connect_timeout"
        )
