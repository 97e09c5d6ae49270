"""The result-store protocol: where job status, attempts, output and errors live across processes.

A store keeps one record per job id: the job (``serialization.dumps``, so a registered
``JobOutput`` subclass comes back typed; no pickle), its queue, status, attempt count and the time
it was first published (newest first in listings). State changes, each one store call:

=================  ============================================================================
``save``           QUEUED at publish (Redis: inside the publish script; :meth:`ResultStore.publish`)
``start``          RUNNING, started_at, attempts = stored attempts + 1 -- unless CANCELLED: then
                   the worker skips the job (compare-and-set, so no separate cancellation check)
``finish``         COMPLETED with output, FAILED with error/traceback/dead_lettered, or QUEUED
                   with the last error while a retry waits
``cancel``         QUEUED -> CANCELLED; a job already running is not interrupted
=================  ============================================================================

Implementations: :mod:`.memory` (in-process), :mod:`.redis`, :mod:`.sql`; :mod:`.urls` picks
one by URL. Store failures raise :class:`~..errors.ResultStoreUnavailable`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Callable, Sequence

from ..backends.base import Backend, WireMessage
from ..errors import ResultStoreUnavailable
from ..models import ExecutionStatus, Job
from ..serialization import dumps, loads

__all__ = ["DEFAULT_TTL", "ResultStore", "decode_record", "encode_job", "unavailable"]

#: Seconds a Redis record lives after its last change.
DEFAULT_TTL = 24 * 3600.0
_WAIT_FIRST, _WAIT_MAX = 0.005, 0.5  # seconds between reads of a polling wait: doubling up to ...

_REASONS = (("refused", "refused"), ("timed out", "timeout"), ("timeout", "timeout"),
            ("name or service", "dns"), ("authentication", "auth"), ("password", "auth"))


def unavailable(url: str, exc: BaseException) -> ResultStoreUnavailable:
    """The error for a store the client library could not reach, with a reason read from it."""
    text = f"{type(exc).__name__}: {exc}"
    reason = next((reason for needle, reason in _REASONS if needle in text.lower()), "error")
    return ResultStoreUnavailable(url, text.splitlines()[0][:300], reason)


def encode_job(job: Job) -> str:
    """A job as a record holds it."""
    return dumps(job)


def decode_record(data: str | bytes, status: str, attempts: int) -> Job:
    """The job of a record, with the record's status and attempt count (the store's own
    columns win: a cancel or a redelivery changes them without rewriting the job)."""
    job = loads(data)
    assert isinstance(job, Job)
    job.status, job.attempts = ExecutionStatus(status), int(attempts)
    return job


class ResultStore(ABC):
    """Job records by id; thread-safe. ``url`` (password masked) names it in errors."""

    url: str

    @abstractmethod
    def save(self, queue: str, jobs: Sequence[Job]) -> None:
        """Record ``jobs`` QUEUED on ``queue`` (their attempt counts as given); one call."""

    @abstractmethod
    def start(self, queue: str, job: Job) -> int | None:
        """Record ``job`` RUNNING as one more attempt; returns the attempt count, or None when
        the job was cancelled (the record stays CANCELLED)."""

    @abstractmethod
    def finish(self, queue: str, job: Job) -> None:
        """Record the job as it is now (its status, output, error, traceback); final statuses
        wake the waiters."""

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """QUEUED -> CANCELLED; False if the job is unknown or has started."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job's record, or None."""

    @abstractmethod
    def list(self, queue: str | None, status: ExecutionStatus | None, limit: int) -> list[Job]:
        """Records, newest first (by first publish)."""

    @abstractmethod
    def forget(self, job_id: str) -> bool:
        """Drop the record; False if there was none."""

    def wait(self, job_id: str, timeout: float | None) -> Job | None:
        """The record once its status is final, or the last one read when ``timeout`` passed
        (None: unknown job). This default reads with a backoff (5 ms doubling to 0.5 s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _WAIT_FIRST
        while True:
            job = self.get(job_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if job is None or job.status.final or (remaining is not None and remaining <= 0):
                return job
            time.sleep(delay if remaining is None else min(delay, remaining))
            delay = min(delay * 2, _WAIT_MAX)

    def publish(
        self, backend: Backend, queue: str, messages: Sequence[WireMessage], priority: int | None,
        jobs: Sequence[Job], on_failure: Callable[[Exception], None],
    ) -> None:
        """Record ``jobs`` QUEUED and publish their ``messages``. The record comes first (a
        fast worker's RUNNING must not be overwritten) and is dropped if the publish fails; a
        store failure is passed to ``on_failure`` and the jobs are published anyway."""
        try:
            self.save(queue, jobs)
        except Exception as exc:  # noqa: BLE001 - the jobs matter more than their records
            on_failure(exc)
            backend.publish(queue, messages, priority)
            return
        try:
            backend.publish(queue, messages, priority)
        except BaseException:
            for job in jobs:
                try:
                    self.forget(job.id)
                except Exception:  # noqa: BLE001 - the publish error is the one to report
                    break
            raise

    def close(self) -> None:
        """Release connections."""
