"""The Orchestrator: one job-queue API over every backend.

The queue operations live in :class:`~.core.QueueOperations`; this class adds the
constructors (URL, environment, Celery configuration, Celery app) and at-least-once
consumption (:mod:`.worker`, :mod:`.dead_letters`), which build on the operations alone.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Mapping, Sequence

from .celery import CeleryTaskMessages, celery_client
from .clients import Client, LocalClient, client_from_url
from .config import broker_settings, broker_url_from_env
from .core import MessageBuilder, OutgoingMessage, QueueOperations, job_message
from .dead_letters import DeadLetter, list_dead_letters, requeue_dead_letters
from .decoding import DEFAULT_LIMITS, DecodeLimits
from .models import Job, JobType
from .queues import validate_queue_name
from .worker import Handler, RetryPolicy, Worker, WorkerStats, claim

__all__ = ["MessageBuilder", "Orchestrator", "OutgoingMessage", "job_message"]


_ORCHESTRATOR_OPTIONS = ("routes", "connection_retries", "limits")


class Orchestrator(QueueOperations):
    """Declare queues, publish and receive jobs, on any backend; consume them at least once.

    Args:
        client: the backend; ``None`` means a fresh :class:`~.clients.LocalClient`.
        routes: job type -> queue overrides for :meth:`submit`, on top of ``QUEUE_MAPPING``.
        message_builder: how a job becomes a message (default :func:`job_message`); every
            publish goes through it, e.g. to send Celery task messages (``from_celery``).
        connection_retries: how often an operation is retried after the broker connection
            broke, before :class:`~.errors.BrokerUnavailable` (a retried publish may deliver
            the job twice).
        limits: size limits of received messages (:class:`~.decoding.DecodeLimits`).
    """

    client: Client

    def __init__(
        self,
        client: Client | None = None,
        *,
        routes: Mapping[JobType | str, str] | None = None,
        connection_retries: int = 2,
        message_builder: MessageBuilder | None = None,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(
            LocalClient() if client is None else client, routes=routes, connection_retries=connection_retries,
            message_builder=message_builder, limits=limits,
        )

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator from a Kombu URL (``memory://``, ``redis://``, ``amqp://``...).

        Keyword arguments go to the client (e.g. ``connect_timeout``), except the orchestrator's
        own: ``routes``, ``connection_retries`` and ``limits``.
        """
        own = {name: kwargs.pop(name) for name in _ORCHESTRATOR_OPTIONS if name in kwargs}
        return cls(client_from_url(url, **kwargs), **own)

    @classmethod
    def from_celery(cls, app: Any, *, tasks: Mapping[str, str] | None = None, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator on a Celery app's broker, sending task messages to task queues.

        It reuses the app's broker URL, transport options and connection pool, and only adds the
        job content type to the app's accepted content. Jobs published to a queue bound to a task
        (``@job_task(app, queue=...)``, or ``tasks={queue: task_name}``) become Celery task messages.

        Args:
            app: a ``celery.Celery`` application.
            tasks: extra queue -> task name bindings, for tasks this process does not import.
            **kwargs: the constructor's ``routes``, ``connection_retries``, ``limits``.

        Raises:
            ImportError: Celery is not installed. ValueError: the app's broker is not supported.
        """
        return cls(celery_client(app), message_builder=CeleryTaskMessages(app, tasks), **kwargs)

    @classmethod
    def from_config(cls, config: str | object, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator on the broker of a Celery configuration, without importing Celery.

        Args:
            config: a module name (``"celeryconfig"``) or an object with ``broker_url`` and,
                optionally, ``broker_transport_options`` and ``broker_connection_timeout``.
                ``CELERY_BROKER_URL`` in the environment wins, as it does for Celery.
            **kwargs: the constructor's ``routes``, ``connection_retries``, ``limits``.
        """
        settings = broker_settings(config)
        return cls.from_url(settings.url, **settings.client_options(), **kwargs)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator from ``MINDTRACE_BROKER_URL``, else ``CELERY_BROKER_URL``, else
        ``redis://localhost:6379/0``. Keyword arguments are those of :meth:`from_url`."""
        return cls.from_url(broker_url_from_env(), **kwargs)

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- at-least-once consumption (see worker.py and dead_letters.py) ---------------------------

    def consume(
        self, queues: str | Sequence[str], handler: Handler, *, until_empty: bool = False, **options: Any
    ) -> WorkerStats:
        """Run a :class:`~mindtrace_kombu.worker.Worker` on ``queues`` until stopped (or, with
        ``until_empty``, until they are empty); ``options`` are the Worker's (``concurrency``,
        ``prefetch``, ``pool="processes"``, ``time_limit``, ``shutdown_grace``, retries,
        ``wait_for_queues``, ``declare_queues``...).

        Raises:
            InvalidArgument: an option out of range, before the broker is used.
            QueueNotFound: a queue does not exist (unless waited for or declared).
        """
        return Worker(self, queues, handler, **options).run(until_empty=until_empty)

    def claim(
        self, queue_name: str, *, timeout: float | None = None, max_retries: int = 3
    ) -> AbstractContextManager[Job | None]:
        """``with orchestrator.claim(queue) as job:`` -- the job is acknowledged when the block
        exits normally; when it raises, the job is retried (``attempts + 1``) or, with its
        retries spent, dead-lettered. ``job`` is None if none came within ``timeout``. While
        the block runs the job is in flight (on Redis under a lease renewed by a heartbeat):
        if the process dies, it returns to the queue."""
        validate_queue_name(queue_name)
        return claim(self, queue_name, timeout=timeout, policy=RetryPolicy(max_retries=max_retries))

    def dead_letters(self, queue_name: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``queue_name``, oldest first, left in place."""
        return list_dead_letters(self, validate_queue_name(queue_name), limit)

    def requeue_dead_letters(self, queue_name: str, limit: int | None = None) -> int:
        """Publish dead-lettered jobs back to their queue with a fresh attempt count; returns how
        many. Messages that are not jobs stay in the dead-letter queue."""
        return requeue_dead_letters(self, validate_queue_name(queue_name), limit)
