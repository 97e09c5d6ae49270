"""Running a handler on one job: the job's lifecycle fields, its output, its error as text.

A job is marked RUNNING (one more attempt) by :func:`start` in the worker's process; the handler
then runs on a thread or in a child process (:mod:`.process_pool`) and the outcome becomes a
:class:`Result`. Errors are kept as text (``"Type: message"`` and a traceback summary), so a result
made in a child process is the same as one made on a thread.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel

from .models import ExecutionStatus, Job, JobOutput

__all__ = [
    "Handler",
    "Result",
    "as_output",
    "complete",
    "describe",
    "execute",
    "fail",
    "run_handler",
    "run_with_soft_limit",
    "start",
    "time_limit_error",
    "utc_now",
]

Handler = Callable[[Job], Any]

_TRACEBACK_FRAMES = 5
_TRACEBACK_CHARS = 4000


@dataclass
class Result:
    """A handler's run: the job with its lifecycle fields filled in, and its error if it failed."""

    job: Job
    duration: float
    error: str | None = None  # "Type: message"
    traceback: str = ""  # the last frames, for the dead letter


def utc_now() -> str:
    """Now, as an ISO 8601 UTC timestamp (the lifecycle fields' format)."""
    return datetime.now(timezone.utc).isoformat()


def start(job: Job) -> float:
    """Mark ``job`` RUNNING as one more attempt; returns the monotonic start time."""
    job.status, job.started_at, job.attempts = ExecutionStatus.RUNNING, utc_now(), job.attempts + 1
    return time.monotonic()


def as_output(value: object) -> JobOutput | None:
    """A handler's return value as the job's output: a ``JobOutput``, another pydantic model
    converted to one, else None."""
    if isinstance(value, JobOutput):
        return value
    if isinstance(value, BaseModel):
        return JobOutput.model_validate(value.model_dump())
    return None


def complete(job: Job, started: float, output: object = None) -> Result:
    """COMPLETED, with the handler's output (see :func:`as_output`) on ``job.payload.output``."""
    job.status, job.completed_at, job.error, job.traceback = ExecutionStatus.COMPLETED, utc_now(), None, None
    converted = as_output(output)
    if converted is not None:
        job.payload.output = converted
    return Result(job, time.monotonic() - started)


def fail(job: Job, started: float, error: str, trace: str = "") -> Result:
    """FAILED with ``error`` (``"Type: message"``) and an optional traceback summary."""
    job.status, job.error, job.traceback = ExecutionStatus.FAILED, error, trace or None
    return Result(job, time.monotonic() - started, error, trace)


def describe(exc: BaseException) -> tuple[str, str]:
    """``("Type: message", traceback summary)`` of an exception."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-_TRACEBACK_FRAMES)
    return f"{type(exc).__name__}: {exc}", "".join(lines)[-_TRACEBACK_CHARS:]


def run_handler(handler: Handler, job: Job, started: float) -> Result:
    """Call ``handler`` on a started job: COMPLETED with its output, or FAILED with its error."""
    try:
        output = handler(job)
    except Exception as exc:  # noqa: BLE001 - any handler failure is retried or dead-lettered
        return fail(job, started, *describe(exc))
    return complete(job, started, output)


def execute(handler: Handler, job: Job) -> Result:
    """Start ``job`` and run ``handler`` on it, on this thread."""
    return run_handler(handler, job, start(job))


def time_limit_error(limit: float, consequence: str) -> str:
    """The error of a job that ran past its time limit."""
    return f"TimeLimitExceeded: the job ran longer than its time limit of {limit:g} s; {consequence}"


def run_with_soft_limit(handler: Handler, job: Job, started: float, limit: float) -> Result:
    """Run ``handler`` on a thread of its own and wait at most ``limit`` seconds. Past the limit
    the job has failed; the thread cannot be stopped and keeps running on a copy of the job, and
    its late result is dropped."""
    finished: list[Result] = []
    copy = job.model_copy(deep=True)
    thread = threading.Thread(
        target=lambda: finished.append(run_handler(handler, copy, started)),
        name=f"mindtrace-job-{job.id[:8]}",
        daemon=True,
    )
    thread.start()
    thread.join(limit)
    if finished:
        return finished[0]
    return fail(job, started, time_limit_error(limit, "its thread cannot be stopped, so it runs on and its result is ignored"))
