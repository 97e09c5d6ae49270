"""``async with orchestrator.claim(queue) as job:`` -- the sync claim, driven from the event loop.

Entering takes the job and exiting settles it on the offload's threads, through the sync context
manager itself (:func:`mindtrace_kombu.worker.claim`), so the semantics are the sync ones exactly.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType

from ..models import Job
from .offload import Offload

__all__ = ["AsyncClaim"]


class AsyncClaim:
    """An async context manager around a sync claim: the job is acknowledged when the block
    exits normally; when it raises an ``Exception`` the job is retried or dead-lettered and the
    exception propagates. ``job`` is None if none came within the timeout.

    As with the sync claim, a block left by a ``BaseException`` (``asyncio.CancelledError``,
    ``KeyboardInterrupt``) settles nothing: the job stays in flight until the orchestrator is
    closed (or, if the process dies, its lease expires), then goes back to its queue.
    """

    def __init__(self, offload: Offload, claim: AbstractContextManager[Job | None], *, waits: bool) -> None:
        self._offload = offload
        self._claim = claim
        self._waits = waits

    async def __aenter__(self) -> Job | None:
        if self._waits:
            return await self._offload.wait(self._claim.__enter__)
        return await self._offload.call(self._claim.__enter__)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        return await self._offload.call(self._claim.__exit__, exc_type, exc, traceback)
