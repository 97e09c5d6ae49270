"""The bounded thread offload: every blocking call of an AsyncOrchestrator runs here, never on
the event loop.

One ``ThreadPoolExecutor`` of ``max_threads`` threads per AsyncOrchestrator. Calls that may wait
for long (``receive_message(timeout=...)``, ``claim(timeout=...)``, ``wait_for``) hold at most half
of the threads, so waiting callers never starve publishes and queue operations of a thread.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from ..arguments import check_count

__all__ = ["DEFAULT_THREADS", "Offload"]

#: Threads per AsyncOrchestrator unless ``max_threads`` says otherwise.
DEFAULT_THREADS = 8

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Offload:
    """Run blocking calls on a bounded pool of threads, awaiting them from the event loop.

    Raises:
        InvalidArgument: ``max_threads`` is not an int >= 2.
    """

    def __init__(self, max_threads: int = DEFAULT_THREADS) -> None:
        self.max_threads = check_count("max_threads", max_threads, minimum=2)
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="mindtrace-aio")
        self._waits = asyncio.Semaphore(max_threads // 2)

    async def call(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``function(*args, **kwargs)`` on a thread of the pool, in a copy of the caller's
        context (as ``asyncio.to_thread``: a current trace span goes along)."""
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: context.run(function, *args, **kwargs))

    async def wait(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """:meth:`call` for a call that may block for long: at most half the threads do so."""
        async with self._waits:
            return await self.call(function, *args, **kwargs)

    def shutdown(self) -> None:
        """Refuse new calls; the threads exit once the calls they run have returned."""
        self._executor.shutdown(wait=False)
