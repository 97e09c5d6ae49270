"""The queue operations of the Orchestrator, over the backend seam alone.

:class:`QueueOperations` validates every input before the broker is touched, then makes a
fixed number of backend calls (round trips per backend in docs/architecture.md). The Worker,
dead letters and the Celery bridge build on this class; :class:`~.orchestrator.Orchestrator`
adds the constructors and the consuming API on top, so nothing here imports them.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Protocol, Sequence, TypeVar

from kombu.exceptions import EncodeError

from . import tracing
from .arguments import check_count, check_flag, check_timeout
from .backends.base import Backend, Delivery, WireMessage
from .backends.wire import encode
from .decoding import DEFAULT_LIMITS, DecodeLimits, Undecodable, decode_job
from .errors import (
    BrokerUnavailable,
    InvalidPriority,
    JobDecodeError,
    JobEncodeError,
    PublishNotReplicated,
    QueueNotFound,
    QueueTypeMismatch,
)
from .exchanges import validate_exchange, validate_routing_key
from .group_commit import GroupCommit
from .models import QUEUE_MAPPING, Job, JobType
from .queues import QueueSpec, dead_letter_queue_name, validate_queue_name
from .registry import WorkerInfo, consumers_by_queue
from .results.base import Recorder, ResultStore, job_record
from .serialization import SERIALIZER

__all__ = ["BrokerClient", "MessageBuilder", "OutgoingMessage", "QueueOperations", "check_job", "job_message"]

_POLL_MIN, _POLL_MAX = 0.001, 0.02  # receive_message(timeout=...) poll backoff, seconds
_RETRY_BACKOFF, _RETRY_BACKOFF_MAX = 0.2, 2.0  # reconnect backoff, seconds
_T = TypeVar("_T")

#: Called with ``(queue_name, count)`` after every successful publish; None (no cost) unless
#: Prometheus metrics are enabled (:mod:`.metrics` sets it).
on_published: Callable[[str, int], None] | None = None


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


class BrokerClient(Protocol):
    """What queue operations need of a client; every client of :mod:`.clients` is one."""

    def open_backend(self) -> Backend:
        """Open the broker's backend."""

    def check_supported(self, spec: QueueSpec) -> None:
        """Raise :class:`~.errors.UnsupportedQueueType` if the backend cannot provide ``spec``."""


def _keep_advice(existing: QueueSpec) -> str | None:
    """What to do about a mismatch with a replicated queue or one declared elsewhere: use it as
    it is (``force`` does not re-create those: it would drop the messages such a queue was
    chosen to keep). None: the default advice, ``force``."""
    if existing.foreign is not None:
        return (
            "it was declared elsewhere: publish to, count and consume it without declaring it, "
            "or declare a queue of another name"
        )
    if existing.replicated:
        return (
            "declare it with replicated=True (mindtrace-jobs declare --replicated), use it without "
            "declaring it, or declare a queue of another name"
        )
    return None


def check_job(job: object) -> Job:
    """``job``, checked to be a :class:`Job` (else ``TypeError``, before anything is sent)."""
    if not isinstance(job, Job):
        raise TypeError(f"expected a Job, got {type(job).__name__}")
    return job


class QueueOperations:
    """Declare queues, publish and receive jobs, on any backend; thread-safe.

    Args:
        client: the broker's client (:mod:`.clients`).
        routes: job type -> queue overrides for :meth:`submit`, on top of ``QUEUE_MAPPING``.
        message_builder: how a job becomes a message (default :func:`job_message`); every
            publish goes through it, e.g. to send Celery task messages (``from_celery``).
        connection_retries: how often an operation is retried after the broker connection
            broke, before :class:`BrokerUnavailable` (a retried publish may deliver the job
            twice). A broker that was never reachable fails at once.
        limits: size limits of received messages, on the wire and decompressed; larger ones
            are dead-lettered undecoded.
        results: where job records are kept (:mod:`.results`), or None for none.
        confirm_publish: RabbitMQ: a publish returns once the broker confirmed it (the
            default: counts are exact when it returns, a job the broker refused raises). False:
            Celery's guarantee -- persistent, written to the socket, not awaited (a job lost in
            a broken connection or sent to a queue deleted meanwhile is not reported). Each
            publish can choose with ``confirm=``. Redis and local publishes always complete
            before they return.
    """

    def __init__(
        self,
        client: BrokerClient,
        *,
        routes: Mapping[JobType | str, str] | None = None,
        connection_retries: int = 2,
        message_builder: MessageBuilder | None = None,
        limits: DecodeLimits = DEFAULT_LIMITS,
        results: ResultStore | None = None,
        confirm_publish: bool = True,
    ) -> None:
        check_count("connection_retries", connection_retries, minimum=0)
        self.confirm_publish = bool(check_flag("confirm_publish", confirm_publish))
        self.recorder = Recorder(results)
        self.client = client
        self.backend: Backend = self.client.open_backend()
        self.connection_retries = connection_retries
        self.limits = limits
        self.message_builder: MessageBuilder = message_builder or job_message
        self.routes: dict[JobType, str] = dict(QUEUE_MAPPING)
        for job_type, queue in (routes or {}).items():
            self.routes[JobType(job_type)] = validate_queue_name(queue)
        self._specs: dict[str, QueueSpec] = {}
        self._groups: GroupCommit[tuple[WireMessage, Job | None]] = GroupCommit()
        self._worked = False  # an operation succeeded: later broken connections are retried

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"

    def close(self) -> None:
        """Release every connection; messages taken and not settled go back to their queues."""
        try:
            self.backend.close()
        finally:
            if self.results is not None:
                self.results.close()

    @property
    def results(self) -> ResultStore | None:
        """Where job records are kept (:mod:`.results`), or None."""
        return self.recorder.store

    @results.setter
    def results(self, store: ResultStore | None) -> None:
        self.recorder.store = store

    def _run(self, operation: Callable[[], _T]) -> _T:
        """Run one backend operation; after a broken connection retry it up to
        ``connection_retries`` times with a short backoff, then :class:`BrokerUnavailable`
        (a :class:`PublishNotReplicated` at once: the jobs are on the master already)."""
        for attempt in itertools.count():
            try:
                result = operation()
            except PublishNotReplicated:
                raise
            except BrokerUnavailable:
                if attempt >= self.connection_retries or not (self._worked or attempt):
                    raise
                time.sleep(min(_RETRY_BACKOFF * 2**attempt, _RETRY_BACKOFF_MAX))
            else:
                self._worked = True
                return result
        raise AssertionError("unreachable")

    def _lookup_spec(self, name: str) -> QueueSpec | None:
        spec = self._run(lambda: self.backend.lookup(name))
        if spec is not None:
            self._specs[name] = spec
        return spec

    def _spec(self, name: str) -> QueueSpec:
        """The queue's spec: cached after the first look-up."""
        spec = self._specs.get(name) or self._lookup_spec(name)
        if spec is None:
            raise QueueNotFound(name)
        return spec

    # -- queues ------------------------------------------------------------------------------------

    def declare_queue(
        self, name: str, queue_type: str = "fifo", *, max_priority: int | None = None, force: bool = False,
        replicated: bool = False,
    ) -> None:
        """Declare a queue; idempotent.

        Args:
            name: queue name.
            queue_type: ``"fifo"``, ``"stack"`` or ``"priority"``.
            max_priority: highest priority of a priority queue, 1..255 (default 10); giving it
                makes the queue a priority queue.
            force: when the queue exists with another type or max_priority, delete it (its
                messages are dropped) and re-create it. Without ``force`` that raises. A
                replicated queue, or one declared elsewhere (a stream, arguments of its own), is
                never re-created: it raises (``delete_queue`` it first if that is meant).
            replicated: keep the queue on several broker nodes, so it outlives the loss of one
                (a RabbitMQ quorum queue: durable, a fifo without priorities).

        Raises:
            InvalidQueueName, InvalidPriority, InvalidArgument, UnsupportedQueueType (also
            ``replicated`` where the backend cannot replicate, or with priorities),
            QueueTypeMismatch, QueueArgumentsMismatch, BrokerUnavailable.
        """
        spec = QueueSpec.create(name, queue_type, max_priority, replicated)
        self.client.check_supported(spec)
        existing = self._declare(spec)
        if existing == spec:
            return
        if not force or existing.replicated or existing.foreign is not None:
            raise QueueTypeMismatch(name, existing.describe(), spec.describe(), _keep_advice(existing))
        self.delete_queue(name)
        existing = self._declare(spec)
        if existing != spec:  # re-declared elsewhere in between
            raise QueueTypeMismatch(name, existing.describe(), spec.describe())

    def _declare(self, spec: QueueSpec) -> QueueSpec:
        """Declare ``spec``; returns the spec the broker holds (1 backend call)."""
        existing = self._run(lambda: self.backend.declare(spec))
        self._specs[spec.name] = existing
        return existing

    def queue_spec(self, queue_name: str) -> QueueSpec:
        """The spec (type, max_priority) of an existing queue, whoever declared it; afterwards
        :meth:`list_queues` includes it on every backend.

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
        specs = self._run(lambda: self.backend.list_specs(candidates))
        return sorted(specs, key=lambda spec: spec.name)

    def unacked_counts(self) -> dict[str, int] | None:
        """Messages delivered to consumers and not yet acknowledged, per queue, where the broker
        reports them (Redis; local; RabbitMQ with the management API), else None."""
        return self._run(self.backend.unacked_counts)

    def count_queue_messages(self, queue_name: str) -> int:
        """Number of ready messages; exact as soon as ``publish`` has returned. 1 round trip.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        return self._run(lambda: self.backend.count(queue_name))

    def peek(self, queue_name: str, limit: int = 10) -> list[Job]:
        """Up to ``limit`` ready jobs in delivery order, left in the queue. Messages that are not
        jobs are left out (a worker dead-letters them). Redis and local: 1 round trip;
        RabbitMQ: 1 per message, each taken and put back at its place, marked redelivered.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        check_count("limit", limit)
        deliveries = self._run(lambda: self.backend.peek(queue_name, limit))
        jobs = []
        for delivery in deliveries:
            try:
                jobs.append(decode_job(delivery.message, self.limits))
            except Undecodable:
                continue
        return jobs

    def workers(self) -> list[WorkerInfo]:
        """The workers running now (this package's, and Celery workers on its Redis
        transport), each listed from its start until it stops or its registry entry lapses
        (Redis: ``lease_timeout``). 1 round trip.

        Raises:
            UnsupportedOperation: on RabbitMQ, which keeps no registry (see
                :meth:`consumer_counts`).
        """
        return [WorkerInfo.model_validate_json(info) for info in self._run(self.backend.workers)]

    def consumer_counts(self, queues: Sequence[str]) -> dict[str, int]:
        """Consumers of each of ``queues``: the broker's count on RabbitMQ (1 round trip per
        queue; missing queues are left out), else the registry's workers consuming it."""
        names = [validate_queue_name(queue) for queue in queues]
        counted = self._run(lambda: self.backend.consumer_counts(names))
        if counted is not None:
            return counted
        listed = consumers_by_queue(self.workers())
        return {queue: listed.get(queue, 0) for queue in names}

    def published_counts(self, queue_names: Sequence[str]) -> dict[str, int] | None:
        """Messages ever published to each queue, for rates (Redis, local; RabbitMQ with the
        management API), else None. 1 round trip."""
        names = [validate_queue_name(name) for name in queue_names]
        return self._run(lambda: self.backend.published_counts(names))

    def clean_queue(self, queue_name: str) -> int:
        """Remove every ready message; returns how many were removed. 1 round trip.

        Raises:
            QueueNotFound: the queue does not exist.
        """
        validate_queue_name(queue_name)
        return self._run(lambda: self.backend.purge(queue_name))

    def delete_queue(self, queue_name: str, *, if_empty: bool = False) -> None:
        """Delete the queue and its messages, whoever declared it.

        Raises:
            QueueNotFound: the queue does not exist.
            QueueNotEmpty: ``if_empty`` and the queue holds messages (it is kept).
        """
        validate_queue_name(queue_name)
        self._specs.pop(queue_name, None)
        self._run(lambda: self.backend.delete(queue_name, if_empty=if_empty))

    # -- exchanges (RabbitMQ; elsewhere UnsupportedOperation) -----------------------------------------

    def declare_exchange(
        self, exchange: str, exchange_type: str = "direct", *, durable: bool = True, auto_delete: bool = False
    ) -> None:
        """Declare an exchange (``direct``, ``topic``, ``fanout`` or ``headers``); idempotent.

        Raises:
            InvalidArgument, UnsupportedOperation (not RabbitMQ), BrokerError (it exists with
            another type), BrokerUnavailable.
        """
        validate_exchange(exchange, exchange_type)
        self._run(lambda: self.backend.declare_exchange(
            exchange, exchange_type, durable=bool(durable), auto_delete=bool(auto_delete)
        ))

    def exchange_exists(self, exchange: str) -> bool:
        """Whether the exchange exists. 1 round trip."""
        validate_exchange(exchange)
        return self._run(lambda: self.backend.exchange_exists(exchange))

    def delete_exchange(self, exchange: str) -> None:
        """Delete the exchange and its bindings. Raises ``ExchangeNotFound``."""
        validate_exchange(exchange)
        self._run(lambda: self.backend.delete_exchange(exchange))

    def bind_queue(self, queue_name: str, exchange: str, routing_key: str | None = None) -> None:
        """Route ``exchange``'s messages with ``routing_key`` (default: the queue's name) to the
        queue. Raises ``QueueNotFound``, ``ExchangeNotFound``."""
        validate_queue_name(queue_name)
        validate_exchange(exchange)
        key = validate_routing_key(queue_name if routing_key is None else routing_key)
        self._run(lambda: self.backend.bind(queue_name, exchange, key))

    # -- publishing --------------------------------------------------------------------------------

    def route(self, job: Job) -> str:
        """The queue :meth:`submit` sends ``job`` to: ``routes[job.job_type]``."""
        return self.routes[JobType(check_job(job).job_type)]

    def publish(
        self, queue_name: str, job: Job, *, priority: int | None = None,
        exchange: str | None = None, routing_key: str | None = None, confirm: bool | None = None,
    ) -> str:
        """Publish ``job``; returns ``job.id``. 1 round trip (RabbitMQ: publish + confirm;
        with ``confirm=False`` none).

        With ``exchange`` (RabbitMQ) the job goes through that exchange with ``routing_key``
        (default: ``queue_name``, whose spec still checks the priority). ``confirm``
        overrides the orchestrator's ``confirm_publish`` for this call.

        Raises:
            QueueNotFound, InvalidPriority, InvalidQueueName, TypeError (not a Job),
            JobEncodeError, ExchangeNotFound, UnsupportedOperation (an exchange on another
            backend), BrokerUnavailable.
        """
        return self.publish_many(
            queue_name, [job], priority=priority, exchange=exchange, routing_key=routing_key, confirm=confirm
        )[0]

    def publish_many(
        self, queue_name: str, jobs: Iterable[Job], *, priority: int | None = None,
        exchange: str | None = None, routing_key: str | None = None, confirm: bool | None = None,
    ) -> list[str]:
        """Publish several jobs to one queue (or through ``exchange``, as :meth:`publish`), in
        order, in one batch; returns their ids. On RabbitMQ the confirms of the whole batch
        are awaited once.

        Every job is validated and encoded before the first is sent, so a job that cannot be
        encoded raises :class:`JobEncodeError` and sends nothing.
        """
        validate_queue_name(queue_name)
        if exchange is not None:
            validate_exchange(exchange)
            routing_key = validate_routing_key(queue_name if routing_key is None else routing_key)
        confirm = self.confirm_publish if check_flag("confirm", confirm) is None else confirm
        backend = self.backend if confirm else self.backend.unconfirmed()
        jobs = list(jobs)
        for job in jobs:
            check_job(job)
        try:
            priority = self._spec(queue_name).validate_priority(priority)
        except InvalidPriority:
            if queue_name not in self._specs:
                raise
            # the cached spec may be stale (re-created elsewhere with another type): check once more
            del self._specs[queue_name]
            priority = self._spec(queue_name).validate_priority(priority)
        with tracing.producing(queue_name, len(jobs)) as trace_headers:
            messages = [self._encode_job(queue_name, job, trace_headers) for job in jobs]
            if exchange is None:
                self._send(queue_name, messages, priority, jobs, backend)
            else:
                self.recorder.record(lambda results: results.save(queue_name, [job_record(job, m) for job, m in zip(jobs, messages)]), None)
                self._run(lambda: backend.publish_to_exchange(
                    exchange, str(routing_key), messages, priority, label=queue_name
                ))
        if on_published is not None:
            on_published(queue_name, len(jobs))
        return [job.id for job in jobs]

    def _encode_job(self, queue_name: str, job: Job, trace_headers: Mapping[str, str]) -> WireMessage:
        message = self.message_builder(queue_name, job)
        try:
            wire = self._encode(message)
            return dataclasses.replace(wire, headers={**wire.headers, **trace_headers}) if trace_headers else wire
        except (EncodeError, ValueError, TypeError) as exc:  # pydantic's errors are ValueErrors
            raise JobEncodeError(queue_name, job.id, f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _encode(message: OutgoingMessage) -> WireMessage:
        return encode(message.body, message.options, SERIALIZER)

    def _send(
        self, queue_name: str, messages: Sequence[WireMessage], priority: int | None, jobs: Sequence[Job] = (),
        backend: Backend | None = None,
    ) -> None:
        """The one publish path: every message, in order, to ``queue_name`` through ``backend``
        (default: confirmed); ``jobs`` (one per message) are recorded QUEUED by the result store
        (on Redis in the same call). Threads sending to the same queue at the same time share
        one call (:mod:`.group_commit`)."""
        target = self.backend if backend is None else backend
        results = self.results if jobs else None

        def send(items: Sequence[tuple[WireMessage, Job | None]]) -> None:
            batch = [message for message, _ in items]
            if results is None:
                target.publish(queue_name, batch, priority)
            else:
                recorded = [job for _, job in items if job is not None]
                results.publish(target, queue_name, batch, priority, recorded, self.recorder.failed)

        recorded_jobs: Sequence[Job | None] = jobs if jobs else [None] * len(messages)
        items = list(zip(messages, recorded_jobs))
        key = (queue_name, priority, target is self.backend, results is not None)
        try:
            self._groups.send(key, items, lambda group: self._run(lambda: send(group)))
        except QueueNotFound:
            self._specs.pop(queue_name, None)
            raise

    def submit(self, job: Job, *, priority: int | None = None, confirm: bool | None = None) -> str:
        """Publish ``job`` to :meth:`route` ``(job)``, declaring that queue (fifo) on first use."""
        queue_name = self.route(job)
        if queue_name not in self._specs and self._lookup_spec(queue_name) is None:
            self.declare_queue(queue_name)
        return self.publish(queue_name, job, priority=priority, confirm=confirm)

    # -- receiving ---------------------------------------------------------------------------------

    def receive_message(self, queue_name: str, *, timeout: float | None = None) -> Job | None:
        """Remove and return the next job, or None when the queue is empty.

        At most once: the job leaves the queue as it is returned (1 round trip). With
        ``timeout`` (seconds) it waits that long for a job, polling with a short backoff. A
        message that is not a job is moved to ``<queue>.dlq`` and raises :class:`JobDecodeError`.

        Raises:
            QueueNotFound, JobDecodeError, InvalidArgument (``timeout`` not a finite number
            >= 0), BrokerUnavailable.
        """
        validate_queue_name(queue_name)
        delivery = self.take(queue_name, timeout, ack=False)
        return None if delivery is None else self.decode_job(delivery)

    def take(self, queue_name: str, timeout: float | None, *, ack: bool) -> Delivery | None:
        """The next message, or None after ``timeout``; with ``ack`` it stays in flight until
        settled (used by ``claim``), else it has left the queue for good."""
        deadline = time.monotonic() + (check_timeout("timeout", timeout) or 0)
        delay = _POLL_MIN
        while True:
            delivery = self._run(lambda: self.backend.get(queue_name, ack=ack))
            if delivery is not None:
                return delivery
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)

    def decode_job(self, delivery: Delivery, *, max_bytes: int | None = None) -> Job:
        """The job in a delivery. Anything else -- see :mod:`~.decoding` for the layers checked,
        with the limits of :attr:`limits` (``max_bytes`` overrides the size on the wire) -- is
        moved byte for byte to the dead-letter queue (:meth:`dead_letter`) and raises
        :class:`JobDecodeError`; the caller still owns the delivery (acknowledge it: it is safe
        in the dead-letter queue)."""
        limits = self.limits if max_bytes is None else dataclasses.replace(self.limits, max_message_bytes=max_bytes)
        try:
            return decode_job(delivery.message, limits)
        except Undecodable as exc:
            reason = str(exc)
        queue_name = delivery.queue
        raise JobDecodeError(queue_name, reason, self.dead_letter(queue_name, delivery.message, reason))

    def dead_letter(self, queue_name: str, message: WireMessage | OutgoingMessage, reason: str) -> str:
        """Publish a message to ``<queue>.dlq`` (declared on first use, replicated if the queue
        is known to be) with the reason in its headers; returns the dead-letter queue's name. A
        received message goes byte for byte (body, content type and encoding); an
        :class:`OutgoingMessage` (a failed job) as given."""
        dlq = dead_letter_queue_name(queue_name)
        if dlq not in self._specs:
            source = self._specs.get(queue_name)
            self._declare(QueueSpec(dlq, replicated=source is not None and source.replicated))
        wire = self._encode(message) if isinstance(message, OutgoingMessage) else message
        headers = {**wire.headers, "x-death-reason": reason, "x-original-queue": queue_name}
        self._send(dlq, [dataclasses.replace(wire, headers=headers)], None)
        return dlq
