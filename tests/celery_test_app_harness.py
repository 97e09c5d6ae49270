"""Start and stop real ``celery worker`` subprocesses for the bridge tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 15.0


class CeleryWorker:
    """A ``celery -A <app> worker`` subprocess in a process group of its own (so that stopping
    it also ends its pool children), its output in a file. Defaults: solo pool, prefetch 1."""

    def __init__(
        self, app: str, queues: Iterable[str], env: Mapping[str, str], output: Path, name: str, *,
        pool: str = "solo", concurrency: int = 1, prefetch_multiplier: int | None = 1,
    ) -> None:
        self.output = output
        #: The worker's node name; with remote control on, it consumes ``<nodename>.celery.pidbox``.
        self.nodename = f"{name}@{socket.gethostname()}"
        command = [
            sys.executable, "-m", "celery", "-A", app, "worker", "--pool", pool, "--concurrency", str(concurrency),
            "--queues", ",".join(queues), "--hostname", self.nodename,
            "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "INFO",
        ]
        if prefetch_multiplier is not None:
            command += ["--prefetch-multiplier", str(prefetch_multiplier)]
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        with open(output, "wb") as sink:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, "PYTHONPATH": pythonpath, **env},
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def log(self) -> str:
        """The worker's output so far (for assertion messages)."""
        return self.output.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool children."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM); after STOP_TIMEOUT seconds, or for pool children left
        behind, SIGKILL the process group."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@contextmanager
def celery_worker(
    app: str, queues: Iterable[str], env: Mapping[str, str], output: Path, name: str
) -> Iterator[CeleryWorker]:
    """Run a worker for the duration of the block; it is always stopped."""
    worker = CeleryWorker(app, queues, env, output, name)
    try:
        yield worker
    finally:
        worker.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)
