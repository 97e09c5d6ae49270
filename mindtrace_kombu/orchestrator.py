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
from .arguments import check_count, check_timeout
from .config import broker_settings, broker_url_from_env
from .core import MessageBuilder, OutgoingMessage, QueueOperations, job_message
from .dead_letters import DeadLetter, list_dead_letters, requeue_dead_letters
from .decoding import DEFAULT_LIMITS, DecodeLimits
from .errors import JobNotFound, ResultsNotConfigured, WaitTimeout
from .models import ExecutionStatus, Job, JobType
from .queues import validate_queue_name
from .results.base import ResultStore
from .results.urls import Results, choose_result_store, result_backend_from_env
from .worker import Handler, RetryPolicy, Worker, WorkerStats, claim

__all__ = ["MessageBuilder", "Orchestrator", "OutgoingMessage", "job_message"]


_ORCHESTRATOR_OPTIONS = ("routes", "connection_retries", "limits", "results", "confirm_publish")

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
        results: where job status and results are kept: a :class:`~.results.ResultStore`, a
            URL (``redis://``, ``sqlite:///jobs.db``, ``postgresql://``, ``memory://``), False for
            none; by default ``MINDTRACE_RESULT_BACKEND``, else the in-process store (local
            backend), the broker's Redis (Redis), none (RabbitMQ).
        confirm_publish: RabbitMQ: a publish returns once the broker confirmed it (default);
            False sends persistent jobs without waiting (Celery's guarantee). Each publish can
            choose with ``confirm=``.
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
        results: Results = None,
        confirm_publish: bool = True,
    ) -> None:
        client = LocalClient() if client is None else client
        super().__init__(
            client, routes=routes, connection_retries=connection_retries,
            message_builder=message_builder, limits=limits, results=choose_result_store(client, results),
            confirm_publish=confirm_publish,
        )

    @classmethod
    def from_url(cls, url: str, *, result_backend: str | None = None, **kwargs: Any) -> Orchestrator:
        """Build an orchestrator from a Kombu URL (``memory://``, ``redis://``, ``amqp://``...),
        with job records in ``result_backend`` (a result store URL; see ``results``).

        Keyword arguments go to the client (e.g. ``connect_timeout``), except the orchestrator's
        own: ``routes``, ``connection_retries``, ``limits``, ``results`` and ``confirm_publish``.
        """
        own = {name: kwargs.pop(name) for name in _ORCHESTRATOR_OPTIONS if name in kwargs}
        if result_backend is not None:
            own["results"] = result_backend
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
                optionally, ``broker_transport_options``, ``broker_connection_timeout`` and
                ``result_backend``. ``CELERY_BROKER_URL`` in the environment wins, as it does
                for Celery; ``MINDTRACE_RESULT_BACKEND`` wins over ``result_backend``.
            **kwargs: the constructor's ``routes``, ``connection_retries``, ``limits``, ``results``.
        """
        settings = broker_settings(config)
        if settings.result_backend is not None and "results" not in kwargs:
            kwargs["results"] = result_backend_from_env() or settings.result_backend
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

    # -- job status and results (see results/) ---------------------------------------------------

    def _results(self) -> ResultStore:
        if self.results is None:
            raise ResultsNotConfigured(self.client.url)
        return self.results

    def get_job(self, job_id: str) -> Job | None:
        """The job's last recorded state (status, attempts, timestamps, typed output, error,
        traceback, dead_lettered), or None. 1 store round trip.

        Raises:
            ResultsNotConfigured, ResultStoreUnavailable (a ``BrokerUnavailable``).
        """
        return self._results().get(str(job_id))

    def wait_for(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once its status is final (completed, failed, cancelled). Redis: woken by
        pub/sub; in-process: a condition; SQL: reads with a backoff (5 ms doubling to 0.5 s).

        Raises:
            JobNotFound, WaitTimeout (``timeout`` seconds passed), ResultsNotConfigured,
            ResultStoreUnavailable, InvalidArgument.
        """
        seconds = check_timeout("timeout", timeout)
        job = self._results().wait(str(job_id), seconds)
        if job is None:
            raise JobNotFound(str(job_id))
        if not job.status.final:
            raise WaitTimeout(str(job_id), seconds or 0.0, job.status.value)
        return job

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not started: every worker skips it (acknowledged, not run) and
        its record says CANCELLED. A running or finished job is not touched: False."""
        return self._results().cancel(str(job_id))

    def list_jobs(
        self, queue: str | None = None, status: ExecutionStatus | str | None = None, limit: int = 100
    ) -> list[Job]:
        """Recorded jobs, newest first (by first publish), optionally of one queue and status."""
        if queue is not None:
            validate_queue_name(queue)
        check_count("limit", limit)
        return self._results().list(queue, None if status is None else ExecutionStatus(status), limit)

    def forget(self, job_id: str) -> bool:
        """Drop the job's record; False if there was none."""
        return self._results().forget(str(job_id))

    def dead_letters(self, queue_name: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``queue_name``, oldest first, left in place."""
        return list_dead_letters(self, validate_queue_name(queue_name), limit)

    def requeue_dead_letters(self, queue_name: str, limit: int | None = None) -> int:
        """Publish dead-lettered jobs back to their queue with a fresh attempt count; returns how
        many. Messages that are not jobs stay in the dead-letter queue."""
        return requeue_dead_letters(self, validate_queue_name(queue_name), limit)
