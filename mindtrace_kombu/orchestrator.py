"""The Orchestrator: one job-queue API over every backend.

Every public method validates its input before touching the broker, then makes a fixed number of
broker round trips through Kombu's channel API (counted per method below). Kombu connections are
not thread-safe, so each thread gets its own connection, channel and producer.
"""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Sequence, TypeVar

from kombu import Connection, Producer
from kombu.exceptions import ContentDisallowed, DecodeError, MessageStateError
from kombu.message import Message
from kombu.serialization import prepare_accept_content

from .clients import Client, LocalClient, client_from_url, translate_errors
from .config import broker_settings, broker_url_from_env
from .errors import BrokerUnavailable, InvalidPriority, JobDecodeError, QueueNotFound, QueueTypeMismatch
from .models import QUEUE_MAPPING, Job, JobType
from .queues import QueueSpec, QueueType, dead_letter_queue_name, validate_queue_name
from .serialization import ACCEPT, SERIALIZER
from .transport.base import UNPARSEABLE_CONTENT_TYPE

if TYPE_CHECKING:
    from .dead_letters import DeadLetter
    from .worker import Handler, WorkerStats

__all__ = ["MessageBuilder", "Orchestrator", "OutgoingMessage", "job_message"]

_ACCEPT = prepare_accept_content(ACCEPT)
_POLL_MIN, _POLL_MAX = 0.001, 0.02  # receive_message(timeout=...) poll backoff, seconds
_RETRY_BACKOFF, _RETRY_BACKOFF_MAX = 0.2, 2.0  # reconnect backoff, seconds
_T = TypeVar("_T")


class OutgoingMessage(NamedTuple):
    """A message for the broker: its body and extra ``Producer.publish`` options (headers...)."""

    body: Any
    options: Mapping[str, Any]


#: How a job becomes the message published to a queue: ``(queue_name, job) -> OutgoingMessage``.
#: The Celery bridge supplies one that turns jobs for task-bound queues into task messages.
MessageBuilder = Callable[[str, Job], OutgoingMessage]


def job_message(queue_name: str, job: Job) -> OutgoingMessage:
    """The default :data:`MessageBuilder`: the job itself, encoded by the job serializer."""
    return OutgoingMessage(job, {})


class _Session:
    """One thread's Kombu connection, channel and producer."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._channel: Any = None
        self._producer: Producer | None = None
        self.worked = False  # an operation succeeded on this connection

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
        message_builder: how a job becomes a message (default :func:`job_message`); every
            publish goes through it, e.g. to send Celery task messages (``from_celery``).
        connection_retries: how often an operation is retried on a new connection after the
            broker connection broke, before :class:`BrokerUnavailable` (a retried publish may
            deliver the job twice).
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        routes: Mapping[JobType | str, str] | None = None,
        connection_retries: int = 2,
        message_builder: MessageBuilder | None = None,
    ) -> None:
        self.client = client if client is not None else LocalClient()
        self.connection_retries = connection_retries
        self.message_builder: MessageBuilder = message_builder or job_message
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

    @classmethod
    def from_celery(cls, app: Any, *, tasks: Mapping[str, str] | None = None, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator on a Celery app's broker, sending task messages to task queues.

        It reuses the app's broker URL, transport options and connection pool, and only adds the
        job content type to the app's accepted content. Jobs published to a queue bound to a task
        (``@job_task(app, queue=...)``, or ``tasks={queue: task_name}``) become Celery task messages.

        Args:
            app: a ``celery.Celery`` application.
            tasks: extra queue -> task name bindings, for tasks this process does not import.
            **kwargs: ``routes``, as for the constructor.

        Raises:
            ImportError: Celery is not installed. ValueError: the app's broker is not supported.
        """
        from .celery import CeleryTaskMessages, celery_client

        return cls(celery_client(app), message_builder=CeleryTaskMessages(app, tasks), **kwargs)

    @classmethod
    def from_config(cls, config: str | object, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator on the broker of a Celery configuration, without importing Celery.

        Args:
            config: a module name (``"celeryconfig"``) or an object with ``broker_url`` and,
                optionally, ``broker_transport_options`` and ``broker_connection_timeout``.
                ``CELERY_BROKER_URL`` in the environment wins, as it does for Celery.
            **kwargs: ``routes``, as for the constructor.
        """
        settings = broker_settings(config)
        return cls.from_url(settings.url, **settings.client_options(), **kwargs)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator from ``MINDTRACE_BROKER_URL``, else ``CELERY_BROKER_URL``, else
        ``redis://localhost:6379/0``. Keyword arguments are those of :meth:`from_url`."""
        return cls.from_url(broker_url_from_env(), **kwargs)

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

    def _drop_session(self, session: _Session) -> None:
        if getattr(self._local, "session", None) is session:
            del self._local.session
        with self._sessions_lock:
            if session in self._sessions:
                self._sessions.remove(session)
        try:
            session.close()
        except Exception:  # noqa: BLE001 - the connection is already broken
            pass

    def _run(self, queue: str, operation: Callable[[_Session], _T]) -> _T:
        """Run one broker operation with errors translated (:func:`translate_errors`).

        A connection that worked and broke is dropped and the operation retried on a new one, up
        to ``connection_retries`` times with a short backoff; then :class:`BrokerUnavailable`.
        A broker that cannot be reached at all fails at once, within the client's
        ``connect_timeout``.
        """
        for attempt in itertools.count():
            session = self._session()
            try:
                with translate_errors(self.client, queue, on_channel_error=session.reset_channel):
                    result = operation(session)
                session.worked = True
                return result
            except BrokerUnavailable:
                self._drop_session(session)
                if attempt >= self.connection_retries or not (session.worked or attempt):
                    raise
                time.sleep(min(_RETRY_BACKOFF * 2**attempt, _RETRY_BACKOFF_MAX))
        raise AssertionError("unreachable")

    def _lookup_spec(self, name: str) -> QueueSpec | None:
        spec = self._run(name, lambda session: self.client.lookup_spec(session.connection, session.channel, name))
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
        self._run(spec.name, lambda session: session.channel.queue_declare(
            spec.name, durable=True, auto_delete=False, arguments=spec.arguments()
        ))
        self._specs[spec.name] = spec

    def queue_spec(self, queue_name: str) -> QueueSpec:
        """The spec (type, max_priority) of an existing queue, whoever declared it; afterwards
        :meth:`list_queues` includes it on every backend. 1 round trip (RabbitMQ: a few probes).

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        return self._spec(queue_name)

    def list_queues(self) -> list[QueueSpec]:
        """Specs of the queues on the broker, by name. Redis and local: 1 round trip; RabbitMQ:
        the management API if enabled, else the routed queues, their dead-letter queues and the
        queues this orchestrator has seen, where they exist."""
        known = {*self.routes.values(), *self._specs}
        candidates = sorted(known | {dead_letter_queue_name(name) for name in known})
        specs = self._run("*", lambda session: self.client.list_specs(session.connection, session.channel, candidates))
        return sorted(specs, key=lambda spec: spec.name)

    def unacked_counts(self) -> dict[str, int] | None:
        """Messages delivered to consumers and not yet acknowledged, per queue, where the broker
        reports them: Redis (this package's unacked records), RabbitMQ with the management API.
        None where it does not (RabbitMQ without it; the local backend keeps them per consumer)."""
        return self._run("*", lambda session: self.client.unacked_counts(session.connection, session.channel))

    def count_queue_messages(self, queue_name: str) -> int:
        """Number of ready messages; exact as soon as ``publish`` has returned. 1 round trip.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        return self._run(queue_name, lambda session: int(
            session.channel.queue_declare(queue_name, passive=True).message_count
        ))

    def clean_queue(self, queue_name: str) -> int:
        """Remove every ready message; returns how many were removed. 1 round trip.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        return self._run(queue_name, lambda session: int(session.channel.queue_purge(queue_name) or 0))

    def delete_queue(self, queue_name: str) -> None:
        """Delete the queue and its messages, whoever declared it. 2 round trips.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        self._specs.pop(queue_name, None)

        def delete(session: _Session) -> None:
            session.channel.queue_declare(queue_name, passive=True)  # RabbitMQ's delete never says 404
            session.channel.queue_delete(queue_name)

        self._run(queue_name, delete)

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
        try:
            priority = self._spec(queue_name).validate_priority(priority)
        except InvalidPriority:
            if queue_name not in self._specs:
                raise
            # the cached spec may be stale (re-created elsewhere with another type): check once more
            del self._specs[queue_name]
            priority = self._spec(queue_name).validate_priority(priority)
        messages = [self.message_builder(queue_name, job) for job in jobs]  # may refuse: nothing sent
        self._send(queue_name, messages, priority)
        return [job.id for job in jobs]

    def _send(self, queue_name: str, messages: Sequence[OutgoingMessage], priority: int | None) -> None:
        """The one publish path: every message, in order, to ``queue_name`` by the default exchange."""

        def send(session: _Session) -> None:
            producer = session.producer
            with producer.batch() if len(messages) > 1 else nullcontext():  # a batch costs 2 round trips more
                for body, options in messages:
                    producer.publish(
                        body, exchange="", routing_key=queue_name, priority=priority,
                        delivery_mode=2, mandatory=True, **options,
                    )

        try:
            self._run(queue_name, send)
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
        return None if message is None else self.decode_job(queue_name, message)

    def _get(self, queue_name: str, timeout: float | None, *, no_ack: bool = True) -> Message | None:
        """The next raw message, or None after ``timeout``; with ``no_ack=False`` it stays
        unacknowledged on this thread's channel until ``message.ack()`` (used by ``claim``)."""

        def get(session: _Session) -> Message | None:
            raw = session.channel.basic_get(queue_name, no_ack=no_ack)
            if raw is None:
                return None
            message: Message = session.channel.message_to_python(raw)
            message.accept = _ACCEPT
            return message

        deadline = time.monotonic() + (timeout or 0)
        delay = _POLL_MIN
        while True:
            message = self._run(queue_name, get)
            if message is not None:
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    def decode_job(self, queue_name: str, message: Message, *, max_bytes: int | None = None) -> Job:
        """The job in a received message. Anything else -- a body over ``max_bytes``, another
        content type, bytes that do not decode, JSON that is not a job -- is moved to the
        dead-letter queue (:meth:`dead_letter`) and raises :class:`JobDecodeError`; the caller
        still owns the original message (acknowledge it: it is safe in the dead-letter queue)."""
        try:
            if max_bytes is not None and len(message.body) > max_bytes:
                raise DecodeError(f"oversize: {len(message.body)} bytes, the limit is {max_bytes}")
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

    def dead_letter(self, queue_name: str, message: Message | OutgoingMessage, reason: str) -> str:
        """Publish a message to ``<queue>.dlq`` (declared on first use) with the reason in its
        headers; returns the dead-letter queue's name. A received Kombu message goes unchanged
        (body, content type and encoding); an :class:`OutgoingMessage` (a failed job) as given."""
        dlq = dead_letter_queue_name(queue_name)
        if dlq not in self._specs:
            self._declare(QueueSpec(dlq))
        if isinstance(message, OutgoingMessage):
            body, options = message.body, dict(message.options)
        else:
            body, options = message.body, {
                "headers": message.headers or {},
                "content_type": message.content_type or "application/octet-stream",
                "content_encoding": message.content_encoding or "binary",
            }
        options["headers"] = {**options.get("headers", {}), "x-death-reason": reason, "x-original-queue": queue_name}
        self._send(dlq, [OutgoingMessage(body, options)], None)
        return dlq

    # -- at-least-once consumption (see worker.py and dead_letters.py) ---------------------------

    def consume(
        self, queues: str | Sequence[str], handler: Handler, *, until_empty: bool = False, **options: Any
    ) -> WorkerStats:
        """Run a :class:`~mindtrace_kombu.worker.Worker` on ``queues`` until stopped (or, with
        ``until_empty``, until they are empty); ``options`` are the Worker's."""
        from .worker import Worker

        return Worker(self, queues, handler, **options).run(until_empty=until_empty)

    def claim(
        self, queue_name: str, *, timeout: float | None = None, max_retries: int = 3
    ) -> AbstractContextManager[Job | None]:
        """``with orchestrator.claim(queue) as job:`` -- the job is acknowledged when the block
        exits normally; when it raises, the job is retried (``attempts + 1``) or, with its
        retries spent, dead-lettered. ``job`` is None if none came within ``timeout``."""
        from .worker import RetryPolicy, claim

        validate_queue_name(queue_name)
        return claim(self, queue_name, timeout=timeout, policy=RetryPolicy(max_retries=max_retries))

    def dead_letters(self, queue_name: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``queue_name``, oldest first, left in place."""
        from .dead_letters import list_dead_letters

        return list_dead_letters(self, validate_queue_name(queue_name), limit)

    def requeue_dead_letters(self, queue_name: str, limit: int | None = None) -> int:
        """Publish dead-lettered jobs back to their queue with a fresh attempt count; returns how
        many. Messages that are not jobs stay in the dead-letter queue."""
        from .dead_letters import requeue_dead_letters

        return requeue_dead_letters(self, validate_queue_name(queue_name), limit)
