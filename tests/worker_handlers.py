"""Handlers imported by name: by ``mindtrace-jobs worker tests.worker_handlers:...`` run from the
repository root, and by spawned child processes.

They append ``start <job id> <pid>`` and ``done <job id>`` lines to the file named by
``$WORKER_TEST_LOG`` (O_APPEND writes: safe across processes, and kept when a process is killed).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from mindtrace_kombu import Job, JobOutput

LOG = "WORKER_TEST_LOG"
RELEASE = "WORKER_TEST_RELEASE"  # a path: until_released() returns once it exists

_NEVER = threading.Event()  # nobody sets it


class Doubled(JobOutput):
    doubled: int
    pid: int


def _log(line: str) -> None:
    descriptor = os.open(os.environ[LOG], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, f"{line}\n".encode())
    finally:
        os.close(descriptor)


def read_log(path: Path) -> tuple[dict[str, int], list[str]]:
    """The started jobs (id -> pid of the process that ran them) and the finished ones."""
    started: dict[str, int] = {}
    done: list[str] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        kind, job_id, *pid = line.split()
        if kind == "start":
            started[job_id] = int(pid[0])
        else:
            done.append(job_id)
    return started, done


def until_released(job: Job) -> None:
    """Runs until the file named by ``$WORKER_TEST_RELEASE`` exists."""
    _log(f"start {job.id} {os.getpid()}")
    while not os.path.exists(os.environ[RELEASE]):
        time.sleep(0.01)
    _log(f"done {job.id}")


def stuck(job: Job) -> None:
    """Never returns: waits on an event that is never set."""
    _log(f"start {job.id} {os.getpid()}")
    _NEVER.wait()


def double(job: Job) -> Doubled:
    """The input's value doubled, and the pid of the process that computed it."""
    return Doubled(doubled=job.payload.input.value * 2, pid=os.getpid())  # type: ignore[attr-defined]


def by_label(job: Job) -> None:
    """Succeed, unless the input's ``label`` is ``doomed`` (every attempt fails) or ``flaky``
    (the first attempt fails)."""
    label = getattr(job.payload.input, "label", "")
    if label == "doomed" or (label == "flaky" and job.attempts == 1):
        raise RuntimeError(f"{label} job, attempt {job.attempts}")
