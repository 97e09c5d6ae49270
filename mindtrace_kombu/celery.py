"""The Celery bridge: jobs executed by Celery workers, and Orchestrators inside Celery projects.

* :func:`job_task` (or ``app.task(base=JobTask, job_queue=...)``) registers a Celery task whose
  function receives the typed :class:`~mindtrace_kombu.models.Job` of each message on a queue.
* ``Orchestrator.from_celery(app)`` publishes through the app's broker connections; a job sent
  to a queue bound to a task becomes a Celery protocol-2 task message (``task``/``id`` headers,
  ``[args, kwargs, embed]`` body, task id = ``job.id``) whose body the job serializer encodes.
* :func:`job_result` and :func:`job_status` read a job's typed result and status from the
  result backend.

Celery is imported inside functions only: this module imports without it, and using it without
Celery raises an ImportError that says what to install. The app's configuration is only ever
extended by the job content type (:func:`accept_jobs`); job tasks store their results with the
job serializer through a backend of their own, so the host's ``task_serializer`` and
``result_serializer`` stay as they are.
"""

from __future__ import annotations

import functools
import os
import weakref
from types import ModuleType
from typing import Any, Callable, Mapping

from kombu.connection import Connection
from kombu.utils.url import maybe_sanitize_url
from kombu.entity import Exchange, Queue

from . import tracing
from .clients import Client, LocalClient, RabbitMQClient, RedisClient, RedisClusterClient, RedisSentinelClient
from .config import exact_order_transport
from .transport import CLUSTER_TRANSPORT, MEMORY_TRANSPORT, REDIS_TRANSPORT
from .errors import JobsError
from .models import ExecutionStatus, Job
from .core import OutgoingMessage, job_message
from .execution import complete, describe, fail, start
from .recording import record_finished, record_started
from .results.base import Outcome, Recorder
from .results.urls import choose_result_store
from .queues import QueueSpec, validate_queue_name
from .serialization import ACCEPT, CONTENT_TYPE, SERIALIZER

__all__ = [
    "CeleryClient",
    "CeleryTaskMessages",
    "JobTask",
    "NoTaskForQueue",
    "accept_jobs",
    "celery_client",
    "job_backend",
    "job_queue",
    "job_result",
    "job_status",
    "job_task",
]

#: Celery task states as job statuses; a retry waiting in the queue is queued again.
_STATUSES = {
    "PENDING": ExecutionStatus.QUEUED,
    "RECEIVED": ExecutionStatus.QUEUED,
    "RETRY": ExecutionStatus.QUEUED,
    "STARTED": ExecutionStatus.RUNNING,
    "SUCCESS": ExecutionStatus.COMPLETED,
    "FAILURE": ExecutionStatus.FAILED,
    "REVOKED": ExecutionStatus.FAILED,
    "REJECTED": ExecutionStatus.FAILED,
}

_job_backends: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class NoTaskForQueue(JobsError, ValueError):
    """A plain job was refused for a queue that the app's Celery workers consume.

    A Celery worker deletes any message without a ``task`` header ("Received and deleted unknown
    message"), so the job would be lost.
    """

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        super().__init__(
            f"queue {queue_name!r} is consumed by Celery workers but bound to no task: register one "
            f"with @job_task(app, queue={queue_name!r}) or pass tasks={{{queue_name!r}: 'task.name'}} "
            f"to Orchestrator.from_celery"
        )


def _import_celery() -> ModuleType:
    try:
        import celery
    except ImportError as exc:
        raise ImportError(
            "the Celery bridge needs Celery: pip install 'mindtrace-kombu[celery]'"
        ) from exc
    return celery  # type: ignore[no-any-return]


# -- configuration ---------------------------------------------------------------------------------


def _add_job_content_type(conf: Any) -> None:
    for key in ("accept_content", "result_accept_content"):
        accepted = conf.get(key)
        if accepted is not None and CONTENT_TYPE not in accepted and SERIALIZER not in accepted:
            conf[key] = [*accepted, CONTENT_TYPE]


def _on_after_configure(sender: Any, source: Any, **kwargs: Any) -> None:
    _add_job_content_type(source)


def accept_jobs(app: Any) -> None:
    """Add the job content type to the app's ``accept_content`` and ``result_accept_content``.

    Idempotent; applied now if the app is configured, and again whenever its configuration is
    (re)loaded. Nothing else in the configuration changes.
    """
    app.on_after_configure.connect(_on_after_configure, sender=app, weak=False, dispatch_uid="mindtrace-jobs")
    if app.configured:
        _add_job_content_type(app.conf)


def job_queue(name: str, queue_type: str = "fifo", *, max_priority: int | None = None) -> Queue:
    """The Celery ``task_queues`` entry for a job queue, matching ``Orchestrator.declare_queue``.

    A worker declares the queues it consumes; a priority queue it does not know with the same
    ``x-max-priority`` fails that declaration (RabbitMQ answers 406). The queue is bound to the
    default exchange only, as the Orchestrator publishes, so no exchange or binding is created.
    """
    spec = QueueSpec.create(name, queue_type, max_priority)
    return Queue(  # type: ignore[no-untyped-call]
        spec.name, Exchange(""), routing_key=spec.name, durable=True,  # type: ignore[no-untyped-call]
        queue_arguments=spec.arguments() or None,
    )


# -- tasks ---------------------------------------------------------------------------------------


@functools.cache
def _job_task_class() -> type:
    celery = _import_celery()

    class JobTask(celery.Task):  # type: ignore[misc, name-defined]
        """Base of Celery tasks that run jobs: the function receives the typed :class:`Job`.

        Task messages use the job serializer; results are stored by :func:`job_backend` (the
        job serializer too), so a returned ``JobOutput`` comes back typed; ``STARTED`` is tracked.
        """

        #: The queue whose jobs this task runs; the Orchestrator sends task messages there.
        job_queue: str | None = None
        serializer = SERIALIZER
        track_started = True

        @classmethod
        def bind(cls, app: Any) -> Any:
            accept_jobs(app)
            return super().bind(app)

        @property
        def backend(self) -> Any:
            backend = self._backend
            return job_backend(self.app) if backend is None else backend

        @backend.setter
        def backend(self, value: Any) -> None:
            self._backend = value

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            """Run the task in a CONSUMER span ``process <job_queue>`` whose parent is the trace
            context in the message headers (:mod:`~mindtrace_kombu.tracing`)."""
            request = self.request
            queue = self.job_queue or self.name
            with tracing.processing(queue, vars(request), str(request.id), request.retries + 1):
                return self._run_recorded(*args, **kwargs)

        def _run_recorded(self, *args: Any, **kwargs: Any) -> Any:
            """Run the task; a job is recorded in the Orchestrator's result store as a worker of
            this package records it: RUNNING, then COMPLETED with its output, FAILED, or QUEUED
            with the error while Celery retries it. A job cancelled before it started is
            ignored (Celery's ``Ignore``: acknowledged, not run)."""
            recorder = _task_recorder(self.app)
            job = args[0] if args and isinstance(args[0], Job) else None
            if recorder.store is None or job is None or self.job_queue is None:
                return super().__call__(*args, **kwargs)
            queue = self.job_queue
            if not record_started(recorder, queue, [job])[0]:
                raise celery.exceptions.Ignore(f"job {job.id} was cancelled")
            started = start(job)
            try:
                value = super().__call__(*args, **kwargs)
            except celery.exceptions.Retry as exc:  # Celery sends it again
                fail(job, started, *describe(exc.exc if isinstance(exc.exc, BaseException) else exc))
                record_finished(recorder, queue, [Outcome.of(job, retrying=True)])
                raise
            except Exception as exc:
                fail(job, started, *describe(exc))
                record_finished(recorder, queue, [Outcome.of(job, dead_letters=False)])
                raise
            complete(job, started, value)
            record_finished(recorder, queue, [Outcome.of(job)])
            return value

        def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
            """Celery's ``apply_async`` (behind ``delay`` and ``retry`` too), sent to
            :attr:`job_queue` by default and never declaring the queue: the Orchestrator
            declares job queues with their type, which a plain Celery declaration would contradict."""
            if self.job_queue is not None:
                options.setdefault("queue", self.job_queue)
            options.setdefault("declare", [])
            with tracing.producing(str(options.get("queue") or self.name), 1) as trace_headers:  # a retry stays in the trace
                if trace_headers:
                    options["headers"] = {**(options.get("headers") or {}), **trace_headers}
                return super().apply_async(args, kwargs, **options)

    JobTask.__qualname__ = "JobTask"
    return JobTask


_recorders: weakref.WeakKeyDictionary[Any, tuple[int, Recorder]] = weakref.WeakKeyDictionary()


def _task_recorder(app: Any) -> Recorder:
    """The result store of ``app``'s job tasks, as ``Orchestrator.from_celery(app)`` chooses it
    (``MINDTRACE_RESULT_BACKEND``, else the broker's Redis); one per app and process (a prefork
    child makes its own)."""
    cached = _recorders.get(app)
    if cached is None or cached[0] != os.getpid():
        cached = _recorders[app] = (os.getpid(), Recorder(choose_result_store(celery_client(app), None)))
    return cached[1]


def __getattr__(name: str) -> Any:
    if name == "JobTask":  # built on first use, so that importing this module needs no Celery
        return _job_task_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def job_task(app: Any, *, queue: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register the decorated function as the Celery task that runs the jobs sent to ``queue``.

    The function receives the :class:`Job` (its ``JobInput`` subclass intact), or ``(self, job)``
    with ``bind=True``, and may return a ``JobOutput`` or any pydantic model or plain data.

    Args:
        app: the ``celery.Celery`` application.
        queue: the job queue bound to the task; ``Orchestrator.from_celery(app)`` turns the jobs
            published there into messages for this task. One task per queue.
        **options: Celery task options (``name``, ``bind``, ``max_retries``, ``autoretry_for``...).

    Raises:
        InvalidQueueName, ImportError: Celery is not installed.
    """
    return app.task(base=_job_task_class(), job_queue=validate_queue_name(queue), **options)  # type: ignore[no-any-return]


# -- results ---------------------------------------------------------------------------------------


def job_backend(app: Any) -> Any:
    """The app's result backend, storing and reading with the job serializer.

    The app's own backend when its ``result_serializer`` is the job serializer; otherwise a
    second instance of the same backend class and URL, so the host's serializer stays as it is.
    """
    backend = app.backend
    if backend.serializer == SERIALIZER:
        return backend
    cached = _job_backends.get(app)
    if cached is None:
        cached = _job_backends[app] = type(backend)(app=app, url=backend.url, serializer=SERIALIZER, accept=ACCEPT)
    return cached


def job_result(app: Any, job: Job | str) -> Any:
    """The ``celery.result.AsyncResult`` of a job (its task id is ``job.id``), decoding typed results."""
    return app.AsyncResult(job.id if isinstance(job, Job) else job, backend=job_backend(app))


def job_status(result: Any) -> ExecutionStatus:
    """The job status of a Celery result: PENDING/RECEIVED/RETRY are queued, STARTED running,
    SUCCESS completed, FAILURE/REVOKED/REJECTED failed. One result-backend read."""
    return _STATUSES.get(result.state, ExecutionStatus.QUEUED)


# -- publishing ------------------------------------------------------------------------------------


class CeleryTaskMessages:
    """The Orchestrator's message builder for a Celery app (``Orchestrator.from_celery``).

    A job for a queue bound to a task becomes the protocol-2 message Celery's ``send_task``
    would send (built by the app's own ``amqp.as_task_v2``), with task id ``job.id``. A job for
    a queue bound to no task stays a plain job message, unless the app's workers consume that
    queue (it is in the app's ``task_queues``): then :class:`NoTaskForQueue` refuses it.

    Args:
        app: the ``celery.Celery`` application.
        tasks: queue -> task name bindings, on top of the app's :func:`job_task` tasks.
    """

    def __init__(self, app: Any, tasks: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.tasks = {validate_queue_name(queue): name for queue, name in (tasks or {}).items()}

    def task_name(self, queue_name: str) -> str | None:
        """The task bound to ``queue_name``: explicit bindings first, then the app's job tasks."""
        name = self.tasks.get(queue_name)
        if name is None:
            bound = (task.name for task in self.app.tasks.values() if getattr(task, "job_queue", None) == queue_name)
            name = next(bound, None)
            if name is not None:
                self.tasks[queue_name] = name
        return name

    def __call__(self, queue_name: str, job: Job) -> OutgoingMessage:
        name = self.task_name(queue_name)
        if name is None:
            if queue_name in self.app.amqp.queues:
                raise NoTaskForQueue(queue_name)
            return job_message(queue_name, job)
        task = self.app.tasks.get(name)
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            job.id, name, args=(job,),
            argsrepr=f"(Job(id={job.id!r}, name={job.name!r}),)", kwargsrepr="{}",
            ignore_result=self.app.conf.task_ignore_result if task is None else task.ignore_result,
            reply_to=self.app.thread_oid,
        )
        return OutgoingMessage(body, {"headers": headers, **properties})


# -- connections -----------------------------------------------------------------------------------


class CeleryClient(Client):
    """Base of the clients on a Celery app's broker; :func:`celery_client` picks the subclass.

    Connections come from the app's pool (``app.pool``), with the app's URL, credentials, SSL
    and transport options. An app on Kombu's stock Redis transport gets connections from
    ``app.connection_for_write`` with this package's Redis transport in its place, as the
    Orchestrator needs exact queue order (fifo queues keep the stock layout either way).
    """

    def __init__(self, app: Any, transport: str | None, **kwargs: Any) -> None:
        self.app = app
        self._transport = transport
        super().__init__(**kwargs)

    def kombu_connection(self) -> Connection:
        if self._transport is None:
            return self.app.pool.acquire(block=True)  # type: ignore[no-any-return]  # back to the pool on close
        return self.app.connection_for_write(transport=self._transport)  # type: ignore[no-any-return]


class CeleryRedisClient(CeleryClient, RedisClient):
    """The app's Redis broker, with exact queue order."""


class CeleryRabbitMQClient(CeleryClient, RabbitMQClient):
    """The app's RabbitMQ broker. Each operation borrows a connection from the app's pool and
    gives it back when it ends, so the orchestrator never holds the app's connections idle."""

    idle_sessions = 0


class CeleryRedisSentinelClient(CeleryClient, RedisSentinelClient):
    """The app's Redis broker through Sentinel, with exact queue order."""


class CeleryRedisClusterClient(CeleryClient, RedisClusterClient):
    """The app's Redis Cluster broker (``mindtrace-rediscluster``)."""


class CeleryLocalClient(CeleryClient, LocalClient):
    """The app's in-process broker (``broker_transport = "mindtrace-memory"``)."""


def celery_client(app: Any) -> CeleryClient:
    """The client on ``app``'s broker (Redis, Redis Sentinel, Redis Cluster, RabbitMQ, or
    mindtrace-memory).

    Reads the broker from the app's connection (its transport's driver; no URL guessing) and
    adds the job content type to the app's accepted content.

    Raises:
        ValueError: the app's transport is neither of those.
    """
    accept_jobs(app)
    probe = app.connection_for_write()
    transport, uri, vhost = probe.get_transport_cls(), probe.as_uri(include_password=True), probe.virtual_host
    ssl = bool(probe.ssl)
    probe.release()
    driver, name = getattr(transport, "driver_type", ""), getattr(transport, "driver_name", "")
    timeout = {"connect_timeout": float(app.conf.broker_connection_timeout)}
    options = {"transport_options": dict(app.conf.broker_transport_options or {})}
    if name == CLUSTER_TRANSPORT:
        return CeleryRedisClusterClient(app, None, url=uri, **options, **timeout)
    if driver == "redis":
        if uri.startswith("sentinel://"):
            return CeleryRedisSentinelClient(app, exact_order_transport(uri), url=uri, **options, **timeout)
        stock = None if name == REDIS_TRANSPORT else exact_order_transport(uri)
        server = f"{'rediss' if ssl else 'redis'}://{uri.partition('://')[2]}"
        return CeleryRedisClient(app, stock, url=server, **options, **timeout)
    if driver == "amqp":
        return CeleryRabbitMQClient(app, None, url=uri, **timeout)
    if name == MEMORY_TRANSPORT:
        return CeleryLocalClient(app, None, broker_id=vhost or "/", **timeout)
    raise ValueError(
        f"Orchestrator.from_celery supports Redis, RabbitMQ (py-amqp) and mindtrace-memory brokers, "
        f"not {transport.__module__}.{transport.__qualname__} ({maybe_sanitize_url(uri)}); for Celery's in-process broker "
        f"set broker_transport = 'mindtrace-memory'"
    )
