"""Child processes for CPU-bound handlers (``Worker(pool="processes")``).

The worker's process consumes, decodes and settles; a child only runs the handler. Each child
has a pipe of its own: the parent sends the started job as JSON (:func:`.serialization.dumps`),
the child answers with the handler's output (a ``JobOutput``, as JSON) or its error as text
(``"Type: message"`` and a traceback). Jobs and results are never pickled.

Children are forked on Linux, so they inherit the handler (and whatever the worker's process
imported); elsewhere they are spawned, and the handler must then be importable by its module and
name (it is pickled by reference). A child that dies, or is killed at its job's time limit, is
replaced and the job gets a failed result. Children ignore SIGINT and SIGTERM: the worker decides
when they stop (they exit when their pipe closes, or are killed by a cold shutdown).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import stat
import sys
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import NamedTuple

from .execution import Handler, Result, complete, describe, fail, run_handler, time_limit_error
from .models import Job, JobOutput
from .serialization import dumps, loads

__all__ = ["ProcessPool", "default_context"]

_EXIT_WAIT = 2.0  # seconds children get to exit once their pipes are closed, before SIGKILL


def default_context() -> BaseContext:
    """``fork`` on Linux (the handler is inherited), else ``spawn`` (the handler must be
    importable): macOS system libraries are not fork-safe, which is why Python spawns there."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


class _Child(NamedTuple):
    process: BaseProcess
    connection: Connection  # the parent's end of the child's pipe


class ProcessPool:
    """``size`` child processes, each running ``handler`` on one job at a time.

    :meth:`run` blocks its calling thread until the child answers; call it from at most ``size``
    threads. With ``time_limit``, a child still running a job after that many seconds is killed
    (SIGKILL) and replaced.
    """

    def __init__(
        self, handler: Handler, size: int, time_limit: float | None = None, context: BaseContext | None = None
    ) -> None:
        self._handler = handler
        self._time_limit = time_limit
        self._context = context or default_context()
        self._lock = threading.Lock()  # children start one at a time; guards _children, _closed
        self._closed = False
        self._children: list[_Child] = []
        self._idle: queue.SimpleQueue[_Child] = queue.SimpleQueue()
        with self._lock:
            for _ in range(size):
                self._idle.put(self._start())

    @property
    def pids(self) -> list[int | None]:
        """The process ids of the live children."""
        with self._lock:
            return [child.process.pid for child in self._children]

    def run(self, job: Job, started: float) -> Result:
        """Run the handler on ``job`` (already started) in an idle child; a handler error, the
        time limit or the child's death is a failed result."""
        message = dumps(job).encode()
        child = self._idle.get()
        try:
            child.connection.send_bytes(message)
            finished = child.connection.poll(self._time_limit)
            reply = child.connection.recv_bytes() if finished else None
        except (EOFError, OSError):
            finished, reply = True, None
        if reply is None:  # replaced outside the except block: a child forked there would carry
            code = self._replace(child)  # its exception as the context of the handler's errors
            if finished:
                return fail(job, started, f"WorkerLostError: the process running the job exited (exit code {code})")
            assert self._time_limit is not None
            return fail(job, started, time_limit_error(self._time_limit, "its process was killed"))
        self._idle.put(child)
        answer = loads(reply)
        if answer["error"] is not None:
            return fail(job, started, answer["error"], answer["traceback"])
        output = answer["output"]  # a dict when this process does not know the output's class
        return complete(job, started, JobOutput.model_validate(output) if isinstance(output, dict) else output)

    def close(self) -> None:
        """Let the children exit (their pipes close); kill those still busy after a moment."""
        children = self._shut()
        for child in self._drain_idle():
            child.connection.close()  # end of file: the child exits
        deadline = time.monotonic() + _EXIT_WAIT
        for child in children:
            child.process.join(max(deadline - time.monotonic(), 0))
        self._reap(children)

    def kill(self) -> None:
        """Kill every child now (SIGKILL); the jobs they were running are abandoned."""
        self._reap(self._shut())
        for child in self._drain_idle():
            child.connection.close()

    # -- children ------------------------------------------------------------------------------

    def _start(self) -> _Child:
        """Start a child (the caller holds the lock: a child forked meanwhile would inherit
        this child's end of the pipe and hide its exit)."""
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(  # type: ignore[attr-defined]
            target=_serve, args=(self._handler, child_end), name="mindtrace-worker-child"
        )
        process.start()
        child_end.close()
        child = _Child(process, parent_end)
        self._children.append(child)
        return child

    def _replace(self, child: _Child) -> int | None:
        """Kill a child (if it still lives) and reap it, and start another unless the pool is
        closed; returns the old child's exit code."""
        self._reap([child])
        child.connection.close()
        with self._lock:
            self._children.remove(child)
            if not self._closed:
                self._idle.put(self._start())
        return child.process.exitcode

    def _shut(self) -> list[_Child]:
        with self._lock:
            self._closed = True
            return list(self._children)

    def _drain_idle(self) -> list[_Child]:
        idle = []
        with contextlib.suppress(queue.Empty):
            while True:
                idle.append(self._idle.get_nowait())
        return idle

    @staticmethod
    def _reap(children: list[_Child]) -> None:
        """Kill the children still alive (SIGKILL) and wait for every one of them."""
        for child in children:
            if child.process.is_alive():
                child.process.kill()
        for child in children:
            child.process.join()


def _serve(handler: Handler, connection: Connection) -> None:
    """A child's life: run the handler on every job the parent sends, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole process group:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent decides what happens to the job
    _drop_inherited_sockets(keep=connection.fileno())
    while True:
        try:
            message = connection.recv_bytes()
        except EOFError:
            return
        try:
            connection.send_bytes(_answer(handler, loads(message)))
        except OSError:  # the parent is gone
            return


def _answer(handler: Handler, job: Job) -> bytes:
    """The handler's output, or its error, as JSON."""
    result = run_handler(handler, job, time.monotonic())
    output = None if result.error is not None else job.payload.output
    try:
        return dumps({"output": output, "error": result.error, "traceback": result.traceback}).encode()
    except Exception as exc:  # noqa: BLE001 - an output that cannot be encoded fails the job
        error, trace = describe(exc)
        return dumps({"output": None, "error": f"{error} (encoding the handler's output)", "traceback": trace}).encode()


def _drop_inherited_sockets(keep: int) -> None:
    """Point every socket a forked child inherited (the worker's broker connections, the other
    children's pipes) at /dev/null: the child holds no connection of the worker, so when the
    worker dies the broker sees its connections close and redelivers its jobs. The descriptors
    stay open, so their numbers are not reused under objects that still name them."""
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return  # no /proc: not Linux, so the child was spawned and inherited nothing
    null = os.open(os.devnull, os.O_RDWR)
    for fd in descriptors:
        if fd > 2 and fd not in (keep, null):
            with contextlib.suppress(OSError):  # the directory's own descriptor is gone already
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.dup2(null, fd)
    os.close(null)
