"""The Orchestrator: one job-queue API over every backend.

Every public method validates its input before touching the broker, then makes a fixed number of
broker round trips through Kombu's channel API (counted per method below). Kombu connections are
not thread-safe, so each thread gets its own connection, channel and producer.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable, Mapping

from kombu import Connection, Producer
from kombu.exceptions import ContentDisallowed, DecodeError, MessageStateError
from kombu.message import Message
from kombu.serialization import prepare_accept_content

from .clients import Client, LocalClient, client_from_url, translate_errors
from .errors import JobDecodeError, QueueNotFound, QueueTypeMismatch
from .models import QUEUE_MAPPING, Job, JobType
from .queues import QueueSpec, QueueType, dead_letter_queue_name, validate_queue_name
from .serialization import ACCEPT, SERIALIZER
from .transport.base import UNPARSEABLE_CONTENT_TYPE

__all__ = ["Orchestrator"]

_ACCEPT = prepare_accept_content(ACCEPT)
_POLL_MIN, _POLL_MAX = 0.001, 0.05  # receive_message(timeout=...) poll backoff, seconds


class _Session:
    """One thread's Kombu connection, channel and producer."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._channel: Any = None
        self._producer: Producer | None = None

    @property
    def channel(self) -> Any:
        if self._channel is None:
            self._channel = self.connection.channel()
        return self._channel

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self.channel, serializer=SERIALIZER, auto_declare=False)
        return self._producer

    def reset_channel(self) -> None:
        """Drop the channel (the broker closed it, or the connection broke); reopen on next use."""
        channel, self._channel, self._producer = self._channel, None, None
        if channel is not None:
            try:
                channel.close()
            except Exception:  # noqa: BLE001 - the channel is already unusable
                pass

    def close(self) -> None:
        self.reset_channel()
        self.connection.release()


class Orchestrator:
    """Declare queues, publish and receive jobs, on any backend.

    Args:
        client: the backend; ``None`` means a fresh :class:`LocalClient`.
        routes: job type -> queue overrides for :meth:`submit`, on top of ``QUEUE_MAPPING``.
    """

    def __init__(self, client: Client | None = None, *, routes: Mapping[JobType | str, str] | None = None) -> None:
        self.client = client if client is not None else LocalClient()
        self.routes: dict[JobType, str] = dict(QUEUE_MAPPING)
        for job_type, queue in (routes or {}).items():
            self.routes[JobType(job_type)] = validate_queue_name(queue)
        self._specs: dict[str, QueueSpec] = {}
        self._local = threading.local()
        self._sessions: list[_Session] = []
        self._sessions_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator from a Kombu URL (``memory://``, ``redis://``, ``amqp://``...).

        Keyword arguments go to the client (e.g. ``connect_timeout``) unless they are ``routes``.
        """
        routes = kwargs.pop("routes", None)
        return cls(client_from_url(url, **kwargs), routes=routes)

    def __repr__(self) -> str:
        return f"Orchestrator({self.client!r})"

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection this orchestrator opened, in all threads."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    # -- sessions and errors -------------------------------------------------------------------

    def _session(self) -> _Session:
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _Session(self.client.connection())
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _broker_call(self, queue: str) -> Any:
        session = self._session()
        return translate_errors(self.client, queue, on_channel_error=session.reset_channel)

    def _lookup_spec(self, name: str) -> QueueSpec | None:
        session = self._session()
        with self._broker_call(name):
            spec = self.client.lookup_spec(session.connection, session.channel, name)
        if spec is not None:
            self._specs[name] = spec
        return spec

    def _spec(self, name: str) -> QueueSpec:
        """The queue's spec: cached after the first look-up (1 round trip, RabbitMQ: a few)."""
        spec = self._specs.get(name) or self._lookup_spec(name)
        if spec is None:
            raise QueueNotFound(name)
        return spec

    # -- queues ------------------------------------------------------------------------------------

    def declare_queue(
        self, name: str, queue_type: str = "fifo", *, max_priority: int | None = None, force: bool = False
    ) -> None:
        """Declare a queue; idempotent.

        Args:
            name: queue name.
            queue_type: ``"fifo"``, ``"stack"`` or ``"priority"``.
            max_priority: highest priority of a priority queue, 1..255 (default 10); giving it
                makes the queue a priority queue.
            force: when the queue exists with another type or max_priority, delete it (its
                messages are dropped) and re-create it. Without ``force`` that raises.

        Raises:
            InvalidQueueName, InvalidPriority, UnsupportedQueueType, QueueTypeMismatch,
            BrokerUnavailable.
        """
        spec = QueueSpec.create(name, queue_type, max_priority)
        self.client.check_supported(spec)
        try:
            self._declare(spec)
        except QueueTypeMismatch:
            existing = self._lookup_spec(name)
            if not force or existing is None:
                raise QueueTypeMismatch(
                    name, existing.describe() if existing else "another type", spec.describe()
                ) from None
            self.delete_queue(name)
            self._declare(spec)

    def _declare(self, spec: QueueSpec) -> None:
        """One queue_declare (Redis: 2 round trips; RabbitMQ and local: 1)."""
        session = self._session()
        with self._broker_call(spec.name):
            session.channel.queue_declare(
                spec.name, durable=True, auto_delete=False, arguments=spec.arguments()
            )
        self._specs[spec.name] = spec

    def list_queues(self) -> list[QueueSpec]:
        """Specs of the queues on the broker, by name. Redis and local: 1 round trip; RabbitMQ:
        the management API if enabled, else the routed queues, their dead-letter queues and the
        queues this orchestrator has seen, where they exist."""
        session = self._session()
        known = {*self.routes.values(), *self._specs}
        candidates = sorted(known | {dead_letter_queue_name(name) for name in known})
        with self._broker_call("*"):
            specs = self.client.list_specs(session.connection, session.channel, candidates)
        return sorted(specs, key=lambda spec: spec.name)

    def count_queue_messages(self, queue_name: str) -> int:
        """Number of ready messages; exact as soon as ``publish`` has returned. 1 round trip.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        session = self._session()
        with self._broker_call(queue_name):
            return int(session.channel.queue_declare(queue_name, passive=True).message_count)

    def clean_queue(self, queue_name: str) -> int:
        """Remove every ready message; returns how many were removed. 1 round trip.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        session = self._session()
        with self._broker_call(queue_name):
            return int(session.channel.queue_purge(queue_name) or 0)

    def delete_queue(self, queue_name: str) -> None:
        """Delete the queue and its messages, whoever declared it. 2 round trips.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        self._specs.pop(queue_name, None)
        session = self._session()
        with self._broker_call(queue_name):
            session.channel.queue_declare(queue_name, passive=True)  # RabbitMQ's delete never says 404
            session.channel.queue_delete(queue_name)

    # -- publishing --------------------------------------------------------------------------------

    def route(self, job: Job) -> str:
        """The queue :meth:`submit` sends ``job`` to: ``routes[job.job_type]``."""
        return self.routes[JobType(job.job_type)]

    def publish(self, queue_name: str, job: Job, *, priority: int | None = None) -> str:
        """Publish ``job``; returns ``job.id``. 1 round trip (RabbitMQ: publish + confirm).

        Raises:
            QueueNotFound, InvalidPriority, InvalidQueueName, TypeError (not a Job), BrokerUnavailable.
        """
        return self.publish_many(queue_name, [job], priority=priority)[0]

    def publish_many(self, queue_name: str, jobs: Iterable[Job], *, priority: int | None = None) -> list[str]:
        """Publish several jobs to one queue, in order, pipelined where the transport allows.

        Every job is validated before the first is sent; returns their ids.
        """
        validate_queue_name(queue_name)
        jobs = list(jobs)
        for job in jobs:
            if not isinstance(job, Job):
                raise TypeError(f"publish expects a Job, got {type(job).__name__}")
        spec = self._spec(queue_name)
        priority = spec.validate_priority(priority)
        self._send(queue_name, jobs, priority)
        return [job.id for job in jobs]

    def _send(self, queue_name: str, bodies: list[Any], priority: int | None, **options: Any) -> None:
        session = self._session()
        try:
            with self._broker_call(queue_name):
                producer = session.producer
                with producer.batch():
                    for body in bodies:
                        producer.publish(
                            body, exchange="", routing_key=queue_name, priority=priority,
                            delivery_mode=2, mandatory=True, **options,
                        )
        except QueueNotFound:
            self._specs.pop(queue_name, None)
            raise

    def submit(self, job: Job, *, priority: int | None = None) -> str:
        """Publish ``job`` to :meth:`route` ``(job)``, declaring that queue (fifo) on first use."""
        queue_name = self.route(job)
        if queue_name not in self._specs and self._lookup_spec(queue_name) is None:
            self.declare_queue(queue_name)
        return self.publish(queue_name, job, priority=priority)

    # -- receiving ---------------------------------------------------------------------------------

    def receive_message(self, queue_name: str, *, timeout: float | None = None) -> Job | None:
        """Remove and return the next job, or None when the queue is empty.

        At most once: the job leaves the queue as it is returned (1 round trip). With
        ``timeout`` (seconds) it waits that long for a job, polling with a short backoff. A
        message that is not a job is moved to ``<queue>.dlq`` and raises :class:`JobDecodeError`.

        Raises:
            QueueNotFound, JobDecodeError, BrokerUnavailable.
        """
        validate_queue_name(queue_name)
        message = self._get(queue_name, timeout)
        return None if message is None else self._decode(queue_name, message)

    def _get(self, queue_name: str, timeout: float | None) -> Message | None:
        session = self._session()
        deadline = time.monotonic() + (timeout or 0)
        delay = _POLL_MIN
        while True:
            with self._broker_call(queue_name):
                raw = session.channel.basic_get(queue_name, no_ack=True)
            if raw is not None:
                message: Message = session.channel.message_to_python(raw)
                message.accept = _ACCEPT
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    def _decode(self, queue_name: str, message: Message) -> Job:
        try:
            job = message.decode()
        except ContentDisallowed:
            if message.content_type == UNPARSEABLE_CONTENT_TYPE:
                reason = "not a Kombu message: the broker held raw bytes"
            else:
                reason = f"content type {message.content_type!r} is not a job (expected {ACCEPT[0]!r})"
        except (DecodeError, MessageStateError) as exc:
            reason = f"cannot decode body: {exc}"
        else:
            if isinstance(job, Job):
                return job
            reason = f"body decodes to {type(job).__name__}, not a Job"
        raise JobDecodeError(queue_name, reason, self.dead_letter(queue_name, message, reason))

    def dead_letter(self, queue_name: str, message: Message, reason: str) -> str:
        """Move a message, unchanged, to ``<queue>.dlq`` (declared on first use) with the reason
        in its headers; returns the dead-letter queue's name."""
        dlq = dead_letter_queue_name(queue_name)
        if dlq not in self._specs:
            self._declare(QueueSpec(dlq))
        headers = {**(message.headers or {}), "x-death-reason": reason, "x-original-queue": queue_name}
        self._send(
            dlq, [message.body], None, headers=headers,
            content_type=message.content_type or "application/octet-stream",
            content_encoding=message.content_encoding or "binary",
        )
        return dlq
