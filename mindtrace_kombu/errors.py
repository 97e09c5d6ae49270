"""The exception hierarchy. Every error derives from :class:`JobsError` and from the built-in a
caller would naturally catch::

    JobsError
    ├── QueueNotFound           (KeyError)         the queue was never declared, or was deleted
    ├── QueueTypeMismatch       (ValueError)       re-declared with another type or max_priority
    │                                              (``QueueAlreadyExists`` is the same class)
    ├── QueueArgumentsMismatch  (ValueError)       the queue exists with other arguments (a RabbitMQ
    │                                              quorum queue, x-max-length...): use it undeclared
    ├── QueueNotEmpty           (ValueError)       delete(if_empty=True) on a queue holding messages
    ├── ExchangeNotFound        (KeyError)         binding or publishing to an exchange that does not exist
    ├── UnsupportedQueueType    (ValueError)       the backend cannot provide this queue type
    ├── InvalidPriority         (ValueError)       priority out of range, not an int, or on a non-priority queue
    ├── InvalidQueueName        (ValueError)       empty, too long, control characters, ``amq.`` prefix
    ├── InvalidArgument         (ValueError)       a timeout, count or limit out of range (NaN, negative, 0 workers)
    ├── JobEncodeError          (ValueError)       a job cannot be serialized; nothing of the batch was sent
    ├── JobDecodeError          (ValueError)       a message is not a job; it was moved to the dead-letter queue
    ├── MessageTooLarge         (ValueError)       a message is over the broker's limit (RabbitMQ max_message_size)
    ├── PermissionDenied        (PermissionError)  the broker refused the user access to a queue or command
    ├── PublishRejected         (RuntimeError)     the broker refused messages (nack: a full queue with
    │                                              overflow reject-publish); those were not enqueued
    ├── UnsupportedOperation    (NotImplementedError)  the backend has no such feature (exchanges on
    │                                              the in-process and Redis backends)
    ├── BrokerError             (RuntimeError)     any other error the broker answered, quoted
    ├── ResultsNotConfigured    (RuntimeError)     a result call without a result store (RabbitMQ
    │                                              without ``result_backend``)
    ├── JobNotFound             (KeyError)         the result store has no record of the job
    ├── WaitTimeout             (TimeoutError)     ``wait_for`` saw no final status in time
    └── BrokerUnavailable       (ConnectionError)  no connection, or it broke; ``reason`` says why
        ├── PublishNotConfirmed                    no publisher confirm within confirm_timeout; the
        │                                          messages may or may not be on the queue
        ├── PublishNotReplicated                   Redis: fewer than wait_replicas replicas have them
        └── ResultStoreUnavailable                 the result store cannot be reached

Messages name the queue and the fix; URLs in messages always have their password masked.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BrokerError",
    "ExchangeNotFound",
    "BrokerUnavailable",
    "InvalidArgument",
    "InvalidPriority",
    "InvalidQueueName",
    "JobDecodeError",
    "JobEncodeError",
    "JobNotFound",
    "JobsError",
    "MessageTooLarge",
    "PermissionDenied",
    "PublishNotConfirmed",
    "PublishNotReplicated",
    "PublishRejected",
    "QueueAlreadyExists",
    "QueueArgumentsMismatch",
    "QueueNotEmpty",
    "QueueNotFound",
    "QueueTypeMismatch",
    "ResultStoreUnavailable",
    "ResultsNotConfigured",
    "UnsupportedOperation",
    "UnsupportedQueueType",
    "WaitTimeout",
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
    """The queue exists with another type or max_priority than requested. The advice is to
    re-create it with ``force``, except for a replicated queue or one declared elsewhere."""

    def __init__(self, queue_name: str, existing: str, requested: str, advice: str | None = None) -> None:
        self.queue_name = queue_name
        self.existing = existing
        self.requested = requested
        advice = advice or "pass force=True to delete and re-create it (its messages are dropped)"
        super().__init__(f"queue {queue_name!r} already exists as {existing}, not {requested}: {advice}")


#: Alias of :class:`QueueTypeMismatch` for callers that catch it by this name. The same class,
#: not a subclass: ``except QueueAlreadyExists`` must catch the mismatch that is raised.
QueueAlreadyExists = QueueTypeMismatch


class QueueArgumentsMismatch(JobsError, ValueError):
    """The queue exists with arguments this package does not declare (someone else declared it:
    a RabbitMQ quorum queue, ``x-max-length``, ``x-message-ttl``...). Re-creating it would drop
    its messages and its arguments, so nothing offers to: publish, count and consume it as it is."""

    def __init__(self, queue_name: str, argument: str, detail: str) -> None:
        self.queue_name = queue_name
        self.argument = argument
        self.detail = detail
        super().__init__(
            f"queue {queue_name!r} exists with another {argument!r} than declare_queue asks for "
            f"(the broker: {detail}): it was declared elsewhere with arguments of its own; publish "
            f"to, count and consume it without declaring it, or declare a queue of another name"
        )


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


class MessageTooLarge(JobsError, ValueError):
    """A message is larger than the broker accepts (RabbitMQ's ``max_message_size``, 128 MiB by
    default); the messages of its batch before it may have been enqueued."""

    def __init__(self, queue_name: str, detail: str) -> None:
        self.queue_name = queue_name
        self.detail = detail
        super().__init__(
            f"a message for {queue_name!r} is larger than the broker accepts ({detail}): keep large "
            f"data elsewhere and put a reference in the job, or raise the broker's max_message_size"
        )


class PermissionDenied(JobsError, PermissionError):
    """The broker refused the user an operation (RabbitMQ 403 ACCESS_REFUSED on a queue, Redis
    ``NOPERM``). A refused login is :class:`BrokerUnavailable` with reason ``auth``."""

    def __init__(self, queue_name: str, detail: str) -> None:
        self.queue_name = queue_name
        self.detail = detail
        super().__init__(
            f"the broker refused access to {queue_name!r} ({detail}): check the user's permissions"
        )


class PublishRejected(JobsError, RuntimeError):
    """The broker refused (``basic.nack``) some messages of a publish: they were not enqueued,
    the others were. RabbitMQ does so for a full queue (``x-max-length`` with ``x-overflow:
    reject-publish``) or when it cannot store them."""

    def __init__(self, queue_name: str, refused: int, total: int) -> None:
        self.queue_name = queue_name
        self.refused = refused
        self.total = total
        super().__init__(
            f"the broker refused {refused} of {total} messages for {queue_name!r}: they were not "
            f"enqueued (is the queue full, with x-max-length and x-overflow=reject-publish?)"
        )


class ExchangeNotFound(JobsError, KeyError):
    """The exchange does not exist on the broker."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        super().__init__(f"exchange {exchange!r} does not exist: declare it first with declare_exchange({exchange!r})")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnsupportedOperation(JobsError, NotImplementedError):
    """The backend does not have this feature."""

    def __init__(self, backend: str, feature: str, alternative: str) -> None:
        self.backend = backend
        self.feature = feature
        super().__init__(f"{backend} does not support {feature}; {alternative}")


class BrokerError(JobsError, RuntimeError):
    """The broker answered an operation with an error no other class describes (a Redis
    ``ResponseError``, an AMQP channel error...); the message quotes it."""

    def __init__(self, queue_name: str, detail: str) -> None:
        self.queue_name = queue_name
        self.detail = detail
        super().__init__(f"the broker refused an operation on {queue_name!r}: {detail}")


class BrokerUnavailable(JobsError, ConnectionError):
    """No connection to the broker, or it broke. ``reason`` is a key of :attr:`REASONS` (the
    CLI prints it); ``detail`` is what the client library said."""

    #: reason -> what to check
    REASONS: ClassVar[dict[str, str]] = {
        "refused": "nothing accepts connections at that address: check that the broker is running there",
        "dns": "the host name does not resolve: check the URL's host",
        "unreachable": "no route to the host: check the network and the URL's host",
        "timeout": "no answer in time: check that it is running and reachable, or raise connect_timeout",
        "tls": "the TLS handshake failed: check the certificates and the URL's scheme and port",
        "auth": "the broker refused the credentials: check the user name and password",
        "vhost": "the virtual host does not exist or the user may not use it: check the URL's path",
        "heartbeat": "the connection went silent (heartbeats missed): check the network (a worker reconnects)",
        "closed": "the broker or the network closed the connection: check the broker's log",
        "read-only": "the server is a read-only replica (after a failover?): point the client at the master",
        "failover": "the Redis Cluster is failing over (a master is down): retry once a replica is promoted",
        "database": "the server has no such database: use a number below its 'databases' setting (16 by default)",
        "error": "check that it is running and reachable, or raise connect_timeout",
    }

    #: What was unavailable, as the message names it.
    subject: ClassVar[str] = "broker"

    def __init__(self, url: str, detail: str, reason: str = "error", advice: str | None = None) -> None:
        self.url = url
        self.detail = detail
        self.reason = reason if reason in self.REASONS else "error"
        self.advice = advice or self.REASONS[self.reason]
        super().__init__(f"{self.subject} {url} is unavailable ({self.reason}): {detail}; {self.advice}")


class PublishNotConfirmed(BrokerUnavailable):
    """RabbitMQ did not confirm a publish within ``confirm_timeout`` seconds (reason
    ``timeout``): the messages may or may not be on the queue, and the connection is dropped.
    A publish retried after this may deliver a job twice."""

    def __init__(self, url: str, queue_name: str, unconfirmed: int, timeout: float) -> None:
        self.queue_name = queue_name
        self.unconfirmed = unconfirmed
        super().__init__(
            url,
            f"{unconfirmed} messages for {queue_name!r} not confirmed within {timeout:g}s",
            "timeout",
            "they may or may not be on the queue; raise confirm_timeout if the broker is only slow",
        )


class PublishNotReplicated(BrokerUnavailable):
    """Redis with ``wait_replicas``: fewer replicas than asked acknowledged a publish within
    ``wait_timeout`` (reason ``timeout``). The jobs are on the master; a failover before they
    reach a replica would lose them. A publish retried after this delivers the jobs twice."""

    def __init__(self, url: str, queue_name: str, count: int, acknowledged: int, wanted: int, timeout: float) -> None:
        self.queue_name, self.count = queue_name, count
        self.acknowledged, self.wanted = acknowledged, wanted
        super().__init__(
            url,
            f"{count} messages for {queue_name!r} reached {acknowledged} of {wanted} replicas within {timeout:g}s",
            "timeout",
            "they are on the master and may be lost if it fails over now; check the replicas, or raise wait_timeout",
        )


class ResultStoreUnavailable(BrokerUnavailable):
    """The result store (Redis, SQL) cannot be reached: job status cannot be read or recorded.
    Jobs are still published and processed; ``reason`` says why."""

    subject = "result store"


class ResultsNotConfigured(JobsError, RuntimeError):
    """A job-status call on an orchestrator without a result store."""

    def __init__(self, broker: str) -> None:
        super().__init__(
            f"no result store is configured for {broker}: pass Orchestrator(client, results=URL), "
            "Orchestrator.from_url(broker_url, result_backend=URL), set MINDTRACE_RESULT_BACKEND, or "
            "result_backend in the Celery config (redis://..., sqlite:///jobs.db, postgresql://...)"
        )


class JobNotFound(JobsError, KeyError):
    """The result store has no record of the job (never published through it, forgotten, expired)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no record of job {job_id!r} in the result store (unknown, forgotten or expired)")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class WaitTimeout(JobsError, TimeoutError):
    """``wait_for`` saw no final status within its timeout; ``job`` is the last record read."""

    def __init__(self, job_id: str, timeout: float, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"job {job_id!r} is still {status} after {timeout:g} s")
