"""An async worker: the sync :class:`~mindtrace_kombu.worker.Worker`, with handlers that are
coroutines running on the event loop.

The Worker's own threads consume, decode, record and settle (acknowledgements, retries, dead
letters, results: exactly the sync machinery); each of its ``concurrency`` handler threads hands
its job to the event loop (:mod:`.handoff`) and waits for the coroutine, so at most
``concurrency`` handlers run at once, on the loop, and nothing blocking ever does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from ..arguments import check_time_limit
from ..core import QueueOperations
from ..errors import InvalidArgument
from ..models import Job
from ..worker import JobEvent, Worker, WorkerStats
from .handoff import LoopHandoff

__all__ = ["AsyncHandler", "AsyncWorker", "TimeLimitExceeded"]

#: ``async def handler(job) -> result``; a returned ``JobOutput`` is stored on ``job.payload.output``.
AsyncHandler = Callable[[Job], Awaitable[Any]]


class TimeLimitExceeded(Exception):
    """An async handler ran past ``time_limit`` and was cancelled (the job has failed)."""


class AsyncWorker:
    """Consume ``queues`` and await ``handler`` for every job on the running event loop, at
    least once.

    Args:
        orchestrator: where the queues live (and where retries and dead letters go).
        queues: queue name(s) to consume.
        handler: a coroutine function ``(job) -> result``.
        time_limit: seconds one run may take; then the handler is cancelled and the job has
            failed (retried or dead-lettered) with :class:`TimeLimitExceeded`.
        on_event: called on the event loop with each :class:`~mindtrace_kombu.worker.JobEvent`.
        **options: the Worker's (``concurrency``, ``prefetch``, ``shutdown_grace``, retries,
            ``wait_for_queues``, ``declare_queues``, ``max_message_bytes``); ``pool`` is
            ``"threads"`` only: handlers run on the event loop.

    Raises:
        InvalidArgument: an option out of range, before the broker is used.
    """

    def __init__(
        self,
        orchestrator: QueueOperations,
        queues: str | Sequence[str],
        handler: AsyncHandler,
        *,
        time_limit: float | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        **options: Any,
    ) -> None:
        if options.get("pool", "threads") != "threads":
            raise InvalidArgument("pool", options["pool"], "async handlers run on the event loop: use pool='threads'")
        self.time_limit = check_time_limit(time_limit)
        self.handler = handler
        self._on_event = on_event
        observer = None if on_event is None else self._post_event
        self._worker = Worker(orchestrator, queues, self._run_on_loop, on_event=observer, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handoff: LoopHandoff | None = None

    @property
    def stats(self) -> WorkerStats:
        """The counters of the current (or last) run."""
        return self._worker.stats

    def stop(self, cold: bool = False) -> None:
        """Ask :meth:`run` to finish, as :meth:`Worker.stop <mindtrace_kombu.worker.Worker.stop>`
        (warm: jobs in progress get ``shutdown_grace``; cold: they go back to the queue and their
        handlers are cancelled)."""
        self._worker.stop(cold=cold)

    async def run(self, until_empty: bool = False) -> WorkerStats:
        """Consume until :meth:`stop` (or, with ``until_empty``, until the queues are empty and
        nothing is in flight); returns the counters.

        Cancelling the awaiting task is a warm stop: jobs in progress finish (their handlers
        keep running on the loop) and are acknowledged, prefetched ones go back to the queue,
        then ``CancelledError`` propagates. A second cancellation meanwhile is a cold stop.

        Raises:
            QueueNotFound, BrokerUnavailable: as :meth:`Worker.run <mindtrace_kombu.worker.Worker.run>`.
        """
        loop = self._loop = asyncio.get_running_loop()
        handoff = self._handoff = LoopHandoff(loop)
        done: asyncio.Future[WorkerStats] = loop.create_future()

        def consume() -> None:
            try:
                stats = self._worker.run(until_empty=until_empty)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, stats, None)

        threading.Thread(target=consume, name="mindtrace-aio-worker", daemon=True).start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            self.stop()
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                self.stop(cold=True)
                await asyncio.shield(done)
            raise
        finally:
            handoff.cancel_running()  # a cold stop gave their jobs back: their results are ignored

    def _run_on_loop(self, job: Job) -> Any:
        """The Worker's handler, on a handler thread: run the coroutine on the loop and wait."""
        assert self._handoff is not None
        return self._handoff.run(partial(self._call, job))

    async def _call(self, job: Job) -> Any:
        if self.time_limit is None:
            return await self.handler(job)
        call = asyncio.ensure_future(self.handler(job))
        try:
            await asyncio.wait({call}, timeout=self.time_limit)
            if not call.done():
                call.cancel()
                await asyncio.wait({call})  # let it unwind
                raise TimeLimitExceeded(
                    f"the job ran longer than its time limit of {self.time_limit:g} s; its handler was cancelled"
                )
            return call.result()
        finally:
            call.cancel()  # this run was cancelled itself (a cold stop): so is the handler

    def _post_event(self, event: JobEvent) -> None:
        assert self._on_event is not None and self._loop is not None
        self._loop.call_soon_threadsafe(self._on_event, event)


def _settle(future: asyncio.Future[WorkerStats], stats: WorkerStats | None, error: BaseException | None) -> None:
    if error is not None:
        future.set_exception(error)
    else:
        assert stats is not None
        future.set_result(stats)
