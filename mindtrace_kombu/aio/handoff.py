"""Running coroutines on an event loop for threads, with one wake-up of the loop per burst.

``asyncio.run_coroutine_threadsafe`` wakes the loop for every call (a write to its self-pipe,
which the loop reads back); the Worker's handler threads hand their jobs over in bursts (a
fetched batch, a round of jobs finishing together), so most of those wake-ups are redundant, and
each costs the loop syscalls during which other threads may take the GIL. Here calls queue up and
only the first of a burst wakes the loop, which starts them all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from functools import partial
from typing import Any

__all__ = ["LoopHandoff"]

_Call = Callable[[], Coroutine[Any, Any, Any]]


class LoopHandoff:
    """Run coroutines on ``loop`` for other threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._queued: list[tuple[_Call, Future[Any]]] = []
        self._running: set[asyncio.Task[Any]] = set()

    def run(self, call: _Call) -> Any:
        """From a thread other than the loop's: run ``call()`` on the loop and wait for it;
        returns its result or raises its exception (``concurrent.futures.CancelledError`` if it
        was cancelled)."""
        future: Future[Any] = Future()
        with self._lock:
            self._queued.append((call, future))
            first = len(self._queued) == 1
        if first:
            self._loop.call_soon_threadsafe(self._start)
        return future.result()

    def cancel_running(self) -> None:
        """On the loop: cancel every coroutine started and not finished."""
        for task in list(self._running):
            task.cancel()

    def _start(self) -> None:
        with self._lock:
            queued, self._queued = self._queued, []
        for call, future in queued:
            task = self._loop.create_task(call())
            self._running.add(task)
            task.add_done_callback(partial(self._finish, future))

    def _finish(self, future: Future[Any], task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled():
            future.cancel()
        elif (error := task.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(task.result())
