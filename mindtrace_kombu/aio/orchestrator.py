"""AsyncOrchestrator: the Orchestrator's API as coroutines, for asyncio programs.

Every call delegates to a sync :class:`~mindtrace_kombu.orchestrator.Orchestrator` on the
bounded thread offload (:mod:`.offload`), so the semantics are the sync ones; concurrent
publishes to a queue are coalesced into shared ``publish_many`` calls (:mod:`.batching`), and
``consume`` runs the sync Worker with coroutine handlers on the loop (:mod:`.worker`). Only
argument checks, the coalescer's bookkeeping and the handlers run on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..arguments import check_flag
from ..clients import Client
from ..core import check_job
from ..dead_letters import DeadLetter
from ..errors import InvalidPriority, QueueNotFound
from ..models import ExecutionStatus, Job
from ..orchestrator import Orchestrator
from ..queues import QueueSpec, validate_queue_name
from ..registry import WorkerInfo
from ..worker import WorkerStats
from .batching import PublishCoalescer, PublishKey
from .claim import AsyncClaim
from .offload import DEFAULT_THREADS, Offload
from .worker import AsyncHandler, AsyncWorker

__all__ = ["AsyncOrchestrator"]


class AsyncOrchestrator:
    """Declare queues, publish, receive and consume jobs from asyncio code, on any backend.

    Args:
        client: a client, on which an Orchestrator is built with ``options`` (``routes``,
            ``connection_retries``, ``limits``, ``results``...), or an existing
            :class:`~mindtrace_kombu.orchestrator.Orchestrator` to wrap. ``None``: a new
            ``LocalClient``.
        max_threads: threads of the offload that runs every blocking call (at least 2).
        owned: whether :meth:`close` closes the Orchestrator too; by default it does when it
            was built here, not when it was given.

    Building it may connect (Redis Cluster reads its slots): do it before the loop is busy,
    or ``await asyncio.to_thread(AsyncOrchestrator.from_url, url)``. Use it from one event
    loop at a time.
    """

    def __init__(
        self,
        client: Client | Orchestrator | None = None,
        *,
        max_threads: int = DEFAULT_THREADS,
        owned: bool | None = None,
        **options: Any,
    ) -> None:
        self._offload = Offload(max_threads)
        if isinstance(client, Orchestrator):
            if options:
                raise TypeError(f"options {sorted(options)} apply to a new Orchestrator, not to a given one")
            self.orchestrator = client
        else:
            self.orchestrator = Orchestrator(client, **options)
        self._owned = not isinstance(client, Orchestrator) if owned is None else owned
        self._publishes = PublishCoalescer(self._offload.call, self._publish_batch, self._declare_missing)

    @classmethod
    def from_url(cls, url: str, *, max_threads: int = DEFAULT_THREADS, **kwargs: Any) -> AsyncOrchestrator:
        """:meth:`Orchestrator.from_url <mindtrace_kombu.orchestrator.Orchestrator.from_url>`, as
        an AsyncOrchestrator that owns it."""
        return cls._owning(Orchestrator.from_url(url, **kwargs), max_threads)

    @classmethod
    def from_env(cls, *, max_threads: int = DEFAULT_THREADS, **kwargs: Any) -> AsyncOrchestrator:
        """:meth:`Orchestrator.from_env <mindtrace_kombu.orchestrator.Orchestrator.from_env>`, as
        an AsyncOrchestrator that owns it."""
        return cls._owning(Orchestrator.from_env(**kwargs), max_threads)

    @classmethod
    def from_config(
        cls, config: str | object, *, max_threads: int = DEFAULT_THREADS, **kwargs: Any
    ) -> AsyncOrchestrator:
        """:meth:`Orchestrator.from_config <mindtrace_kombu.orchestrator.Orchestrator.from_config>`,
        as an AsyncOrchestrator that owns it."""
        return cls._owning(Orchestrator.from_config(config, **kwargs), max_threads)

    @classmethod
    def _owning(cls, orchestrator: Orchestrator, max_threads: int) -> AsyncOrchestrator:
        try:
            return cls(orchestrator, max_threads=max_threads, owned=True)
        except BaseException:
            orchestrator.close()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.orchestrator.client!r}, max_threads={self._offload.max_threads})"

    async def __aenter__(self) -> AsyncOrchestrator:  # noqa: PYI034 - as Orchestrator.__enter__
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Wait for the publishes under way, close the Orchestrator if owned (jobs held by an
        open ``claim`` go back to their queue), and stop the threads. Later calls raise
        ``RuntimeError``."""
        await self._publishes.drain()
        try:
            if self._owned:
                await self._offload.call(self.orchestrator.close)
        finally:
            self._offload.shutdown()

    # -- queues ------------------------------------------------------------------------------------

    async def declare_queue(
        self, name: str, queue_type: str = "fifo", *, max_priority: int | None = None, force: bool = False,
        replicated: bool = False,
    ) -> None:
        """Declare a queue; idempotent (see ``Orchestrator.declare_queue``)."""
        await self._offload.call(
            self.orchestrator.declare_queue, name, queue_type, max_priority=max_priority, force=force,
            replicated=replicated,
        )

    async def queue_spec(self, queue_name: str) -> QueueSpec:
        """The spec of an existing queue. Raises ``QueueNotFound``."""
        return await self._offload.call(self.orchestrator.queue_spec, queue_name)

    async def list_queues(self) -> list[QueueSpec]:
        """Specs of the queues on the broker, by name."""
        return await self._offload.call(self.orchestrator.list_queues)

    async def count_queue_messages(self, queue_name: str) -> int:
        """Ready messages; exact once ``publish`` has returned."""
        return await self._offload.call(self.orchestrator.count_queue_messages, queue_name)

    async def clean_queue(self, queue_name: str) -> int:
        """Remove every ready message; returns how many."""
        return await self._offload.call(self.orchestrator.clean_queue, queue_name)

    async def delete_queue(self, queue_name: str, *, if_empty: bool = False) -> None:
        """Delete the queue and its messages. Raises ``QueueNotFound``, ``QueueNotEmpty``."""
        await self._offload.call(self.orchestrator.delete_queue, queue_name, if_empty=if_empty)

    async def peek(self, queue_name: str, limit: int = 10) -> list[Job]:
        """Up to ``limit`` ready jobs in delivery order, left in the queue."""
        return await self._offload.call(self.orchestrator.peek, queue_name, limit)

    async def unacked_counts(self) -> dict[str, int] | None:
        """Messages delivered and not yet acknowledged, per queue, where the broker reports them."""
        return await self._offload.call(self.orchestrator.unacked_counts)

    async def workers(self) -> list[WorkerInfo]:
        """The running workers (not on RabbitMQ: ``UnsupportedOperation``)."""
        return await self._offload.call(self.orchestrator.workers)

    async def consumer_counts(self, queues: Sequence[str]) -> dict[str, int]:
        """Consumers of each queue."""
        return await self._offload.call(self.orchestrator.consumer_counts, queues)

    async def published_counts(self, queue_names: Sequence[str]) -> dict[str, int] | None:
        """Messages ever published to each queue, where the broker counts them."""
        return await self._offload.call(self.orchestrator.published_counts, queue_names)

    # -- exchanges (RabbitMQ) ----------------------------------------------------------------------

    async def declare_exchange(
        self, exchange: str, exchange_type: str = "direct", *, durable: bool = True, auto_delete: bool = False
    ) -> None:
        """Declare an exchange; idempotent."""
        await self._offload.call(
            self.orchestrator.declare_exchange, exchange, exchange_type, durable=durable, auto_delete=auto_delete
        )

    async def exchange_exists(self, exchange: str) -> bool:
        """Whether the exchange exists."""
        return await self._offload.call(self.orchestrator.exchange_exists, exchange)

    async def delete_exchange(self, exchange: str) -> None:
        """Delete the exchange and its bindings."""
        await self._offload.call(self.orchestrator.delete_exchange, exchange)

    async def bind_queue(self, queue_name: str, exchange: str, routing_key: str | None = None) -> None:
        """Route ``exchange``'s messages with ``routing_key`` (default: the queue's name) to the queue."""
        await self._offload.call(self.orchestrator.bind_queue, queue_name, exchange, routing_key)

    # -- publishing (coalesced: see batching.py) ----------------------------------------------------

    def route(self, job: Job) -> str:
        """The queue :meth:`submit` sends ``job`` to."""
        return self.orchestrator.route(job)

    async def publish(
        self, queue_name: str, job: Job, *, priority: int | None = None, exchange: str | None = None,
        routing_key: str | None = None, confirm: bool | None = None,
    ) -> str:
        """Publish ``job``; returns ``job.id`` once the broker holds it. Concurrent publishes to
        the queue with the same options share one ``publish_many`` call; a queue's jobs go out
        in the order the calls were made.

        Raises:
            the sync ``publish``'s errors; a wrong type, queue name or priority only to the
            caller that passed it, before anything is sent.
        """
        ids = await self._publish(queue_name, [job], priority, exchange, routing_key, confirm)
        return ids[0]

    async def publish_many(
        self, queue_name: str, jobs: Iterable[Job], *, priority: int | None = None, exchange: str | None = None,
        routing_key: str | None = None, confirm: bool | None = None,
    ) -> list[str]:
        """Publish several jobs in order, all or none encoded (as the sync ``publish_many``),
        coalesced with concurrent publishes as :meth:`publish`; returns their ids."""
        return await self._publish(queue_name, list(jobs), priority, exchange, routing_key, confirm)

    async def submit(self, job: Job, *, priority: int | None = None, confirm: bool | None = None) -> str:
        """Publish ``job`` to :meth:`route` ``(job)``, declaring that queue (fifo) on first use."""
        queue_name = self.route(job)
        ids = await self._publish(queue_name, [job], priority, None, None, confirm, declare=True)
        return ids[0]

    async def _publish(
        self, queue_name: str, jobs: list[Job], priority: int | None, exchange: str | None,
        routing_key: str | None, confirm: bool | None, *, declare: bool = False,
    ) -> list[str]:
        """Check what is cheap to check here, then wait for the coalescer to send the jobs."""
        validate_queue_name(queue_name)
        for job in jobs:
            check_job(job)
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise InvalidPriority(queue_name, priority, "a priority is an int")  # True must not join priority 1
        key = PublishKey(queue_name, priority, exchange, routing_key, check_flag("confirm", confirm))
        return await self._publishes.add(key, jobs, declare=declare)

    def _publish_batch(self, key: PublishKey, jobs: list[Job]) -> list[str]:
        """On a thread: one sync ``publish_many``."""
        return self.orchestrator.publish_many(
            key.queue, jobs, priority=key.priority, exchange=key.exchange, routing_key=key.routing_key,
            confirm=key.confirm,
        )

    def _declare_missing(self, queue_name: str) -> None:
        """On a thread: what ``submit`` does on first use of a queue, with the sync calls."""
        try:
            self.orchestrator.queue_spec(queue_name)
        except QueueNotFound:
            self.orchestrator.declare_queue(queue_name)

    # -- receiving and consuming ---------------------------------------------------------------------

    async def receive_message(self, queue_name: str, *, timeout: float | None = None) -> Job | None:
        """Remove and return the next job (at most once), waiting up to ``timeout`` seconds."""
        call = self._offload.wait if timeout else self._offload.call
        return await call(self.orchestrator.receive_message, queue_name, timeout=timeout)

    def claim(self, queue_name: str, *, timeout: float | None = None, max_retries: int = 3) -> AsyncClaim:
        """``async with orchestrator.claim(queue) as job:`` -- acknowledged when the block exits
        normally; retried (``attempts + 1``) or, with its retries spent, dead-lettered when it
        raises. ``job`` is None if none came within ``timeout``."""
        claim = self.orchestrator.claim(queue_name, timeout=timeout, max_retries=max_retries)
        return AsyncClaim(self._offload, claim, waits=bool(timeout))

    async def consume(
        self, queues: str | Sequence[str], handler: AsyncHandler, *, until_empty: bool = False, **options: Any
    ) -> WorkerStats:
        """Run an :class:`~mindtrace_kombu.aio.worker.AsyncWorker`: ``await handler(job)`` on
        this loop for every job, at most ``concurrency`` at once, at least once, with the sync
        Worker's retries, dead letters and results. Cancelling the awaiting task is a warm
        shutdown. ``options`` are the AsyncWorker's (the Worker's, plus ``time_limit`` that
        cancels the handler, and ``on_event`` called on the loop).

        Raises:
            InvalidArgument: an option out of range, before the broker is used.
            QueueNotFound: a queue does not exist (unless waited for or declared).
        """
        return await AsyncWorker(self.orchestrator, queues, handler, **options).run(until_empty=until_empty)

    async def dead_letters(self, queue_name: str, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``queue_name``, oldest first, left in place."""
        return await self._offload.call(self.orchestrator.dead_letters, queue_name, limit)

    async def requeue_dead_letters(self, queue_name: str, limit: int | None = None) -> int:
        """Publish dead-lettered jobs back to their queue with a fresh attempt count; returns how many."""
        return await self._offload.call(self.orchestrator.requeue_dead_letters, queue_name, limit)

    # -- job status and results ----------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job | None:
        """The job's last recorded state, or None."""
        return await self._offload.call(self.orchestrator.get_job, job_id)

    async def wait_for(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once its status is final. Raises ``JobNotFound``, ``WaitTimeout``."""
        return await self._offload.wait(self.orchestrator.wait_for, job_id, timeout)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job no worker has taken yet; False if it has started or finished."""
        return await self._offload.call(self.orchestrator.cancel, job_id)

    async def list_jobs(
        self, queue: str | None = None, status: ExecutionStatus | str | None = None, limit: int = 100
    ) -> list[Job]:
        """Recorded jobs, newest first, optionally of one queue and status."""
        return await self._offload.call(self.orchestrator.list_jobs, queue, status, limit)

    async def forget(self, job_id: str) -> bool:
        """Drop the job's record; False if there was none."""
        return await self._offload.call(self.orchestrator.forget, job_id)
