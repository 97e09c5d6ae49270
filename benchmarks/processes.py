"""Worker subprocesses for the end-to-end scenarios: start, wait for, stop, and read their logs.

Each worker runs from this interpreter (``sys.executable -m <tool>``) in a process group of its own,
with the repository on ``PYTHONPATH`` and its output in a log file whose tail goes into errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
#: Seconds for workers to start consuming.
WORKER_TIMEOUT = 60.0
#: Seconds a warm shutdown may take before the process group is killed: runs stop their workers
#: once every job is done, and some idle workers take long to notice a SIGTERM (Celery's threads
#: pool on py-amqp: about 10 s).
STOP_GRACE = 5.0


def module_command(module: str, *args: str) -> list[str]:
    """``python -m module args...`` with this interpreter, so the tool runs from this venv."""
    return [sys.executable, "-m", module, *args]


class Workers:
    """Worker processes started together, each in a process group of its own, logging to a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.logs: list[Path] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        """Start one more worker; ``env`` adds to this process's environment."""
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        log = self.directory / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as sink:
            self.processes.append(subprocess.Popen(
                list(command), cwd=ROOT, env={**os.environ, "PYTHONPATH": path, **env},
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            ))

    def tail(self) -> str:
        """The end of each worker's output, for error messages."""
        return "\n".join(
            f"--- {log.name}:\n{log.read_text(errors='replace')[-2000:]}" for log in self.logs
        )

    def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout: float = WORKER_TIMEOUT
    ) -> None:
        """Poll ``predicate`` until true; raise with the logs when a worker exits or ``timeout``
        passes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            exited = [process.args for process in self.processes if process.poll() is not None]
            if exited or time.monotonic() > deadline:
                why = f"exited: {exited}" if exited else f"not within {timeout:.0f} s"
                raise RuntimeError(f"{what}: {why}\n{self.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM) of every worker, then SIGKILL whatever is left of each group."""
        running = [process for process in self.processes if process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(WORKER_TIMEOUT)


@contextmanager
def started(
    commands: Sequence[Sequence[str]], env: Mapping[str, str], directory: Path
) -> Iterator[Workers]:
    """Start ``commands`` as workers for the duration of the block; stop them after it."""
    workers = Workers(directory)
    try:
        for command in commands:
            workers.start(command, env)
        yield workers
    finally:
        workers.stop()


def wait_for_item(client: redis.Redis, key: str, timeout: float) -> bool:
    """Block until list ``key`` gets an item, in BLPOPs of a second (below redis-py's socket
    timeout); False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not client.blpop([key], timeout=1):
        if time.monotonic() > deadline:
            return False
    return True


def delete_matching(client: redis.Redis, pattern: str) -> None:
    """Delete every key matching ``pattern`` (SCAN, then DEL in batches)."""
    keys = list(client.scan_iter(match=pattern, count=1000))
    for first in range(0, len(keys), 500):
        client.delete(*keys[first:first + 500])
