"""Handler threads of a worker: daemon threads running submitted calls, one at a time each.

Unlike ``concurrent.futures.ThreadPoolExecutor``, whose threads the interpreter joins at exit, a
thread stuck in a handler forever here never keeps the process from exiting after a cold shutdown.
A call not started yet can be cancelled (and its job given back). A submitted call is a small
:class:`Task`, not a ``Future``: nothing waits for its result, and a ``Future`` costs a condition
variable per job on the worker's hot path.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["DaemonThreadPool", "Task"]

logger = logging.getLogger(__name__)


class Task:
    """A submitted call: it either starts or is cancelled, never both."""

    __slots__ = ("call", "_claimed", "_lock")

    def __init__(self, call: Callable[[], None], lock: threading.Lock) -> None:
        self.call = call
        self._claimed = False
        self._lock = lock  # the pool's: one lock for every task's start-or-cancel

    def cancel(self) -> bool:
        """Keep the call from starting; False if a thread has started it already."""
        return self._claim()

    def _claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True


class DaemonThreadPool:
    """``size`` daemon threads taking calls in submission order."""

    def __init__(self, size: int, name: str) -> None:
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._claims = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{number}", daemon=True) for number in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, call: Callable[[], None]) -> Task:
        """Queue ``call``; it can be cancelled until a thread starts it."""
        task = Task(call, self._claims)
        self._tasks.put(task)
        return task

    def close(self) -> None:
        """Let every thread exit once it has nothing left to do; does not wait (a thread stuck
        in a call stays stuck, as a daemon)."""
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            if not task._claim():
                continue  # cancelled before it started
            try:
                task.call()
            except BaseException:  # logged; the thread takes the next call
                logger.exception("worker thread: unexpected error")
