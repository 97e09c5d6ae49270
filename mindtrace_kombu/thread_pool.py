"""Handler threads of a worker: daemon threads running submitted calls, one at a time each.

Unlike ``concurrent.futures.ThreadPoolExecutor``, whose threads the interpreter joins at exit, a
thread stuck in a handler forever here never keeps the process from exiting after a cold shutdown.
Calls are ``Future``s, so one not started yet can be cancelled (and its job given back).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

__all__ = ["DaemonThreadPool"]

logger = logging.getLogger(__name__)

_Task = tuple["Future[None]", Callable[[], None]]


class DaemonThreadPool:
    """``size`` daemon threads taking calls in submission order."""

    def __init__(self, size: int, name: str) -> None:
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{number}", daemon=True) for number in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, call: Callable[[], None]) -> Future[None]:
        """Queue ``call``; its future can be cancelled until a thread starts it."""
        future: Future[None] = Future()
        self._tasks.put((future, call))
        return future

    def close(self) -> None:
        """Let every thread exit once it has nothing left to do; does not wait (a thread stuck
        in a call stays stuck, as a daemon)."""
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, call = task
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it started
            try:
                call()
            except BaseException as exc:  # kept on the future, and logged
                logger.exception("worker thread: unexpected error")
                future.set_exception(exc)
            else:
                future.set_result(None)
