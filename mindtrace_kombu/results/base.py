"""The result-store protocol: where job status, attempts, output and errors live across processes.

A store keeps one record per job id: the job as published (``serialization.dumps``; no pickle),
its queue, and columns the workers write: status, attempts, started_at, completed_at, error,
traceback, output (``dumps`` of the ``JobOutput``, so the registered subclass comes back typed)
and dead_lettered. Reading a record overlays the columns on the published job. Every method takes
a batch and is one store call (one round trip on Redis and SQL):

=================  ============================================================================
``save``           QUEUED (or the given status) at publish -- on Redis inside the publish script
                   (:meth:`ResultStore.publish`); outcome columns are reset, the last error kept
``start``          RUNNING with started_at and one more attempt -- unless CANCELLED: the worker
                   then skips the job (compare-and-set, so no separate cancellation check)
``finish``         COMPLETED with output, FAILED with error/traceback/dead_lettered, or QUEUED
                   with the last error while a retry waits; final statuses wake the waiters
``cancel``         QUEUED -> CANCELLED; a job already taken by a worker is not interrupted
=================  ============================================================================

Implementations: :mod:`.memory` (in-process), :mod:`.redis`, :mod:`.sql`; :mod:`.urls` picks
one by URL. Store failures raise :class:`~..errors.ResultStoreUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

from ..backends.base import Backend, WireMessage
from ..errors import ResultStoreUnavailable
from ..models import ExecutionStatus, Job, JobOutput
from ..redis_store.records import JobRecord
from ..serialization import JOB_PREFIX, dumps, loads

__all__ = [
    "CANCELLED", "DEFAULT_TTL", "FINISH_COLUMNS", "KEPT_ON_SAVE", "MISSING", "OUTCOME_COLUMNS", "JobRecord", "Outcome", "Recorder", "ResultStore",
    "is_job_body", "job_record", "overlay", "read_record", "unavailable",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Seconds a Redis record lives after its last change (Celery's ``result_expires`` default).
DEFAULT_TTL = 24 * 3600.0
#: What :meth:`ResultStore.start` returns for a cancelled job, and for a job without a record.
CANCELLED, MISSING = -1, 0
#: Columns a worker writes; :meth:`ResultStore.save` resets all but the last error.
OUTCOME_COLUMNS = ("started_at", "completed_at", "error", "traceback", "output", "dead_lettered")
#: The outcome columns :meth:`ResultStore.save` keeps (a retry waits with its last error); it
#: clears the others (``lua/lib.lua``'s ``save_record`` does the same on Redis).
KEPT_ON_SAVE = ("error", "traceback")
#: The outcome columns :meth:`ResultStore.finish` writes (:meth:`Outcome.columns`, in this order).
FINISH_COLUMNS = OUTCOME_COLUMNS[1:]
_WAIT_FIRST, _WAIT_MAX = 0.005, 0.5  # seconds between reads of a polling wait: doubling up to ...

_REASONS = (("refused", "refused"), ("timed out", "timeout"), ("timeout", "timeout"),
            ("name or service", "dns"), ("authentication", "auth"), ("password", "auth"))


def unavailable(url: str, exc: BaseException) -> ResultStoreUnavailable:
    """The error for a store the client library could not reach, with a reason read from it."""
    text = f"{type(exc).__name__}: {exc}"
    reason = next((reason for needle, reason in _REASONS if needle in text.lower()), "error")
    return ResultStoreUnavailable(url, text.splitlines()[0][:300], reason)


def is_job_body(message: WireMessage) -> bool:
    """Whether ``message``'s body is the encoded job itself (the default message builder,
    uncompressed): a record can keep it instead of encoding the job again."""
    return message.body.startswith(JOB_PREFIX)


def job_record(job: Job, message: WireMessage | None = None) -> JobRecord:
    """The record of ``job``, lending ``message``'s body when it is the job (:func:`is_job_body`)."""
    data = message.body if message is not None and is_job_body(message) else dumps(job)
    return JobRecord(job.id, data, job.attempts)


@dataclass(frozen=True)
class Outcome:
    """What a worker learned of a job: its status and the outcome columns."""

    job_id: str
    status: ExecutionStatus
    completed_at: str | None = None
    error: str | None = None
    traceback: str | None = None
    output: str | None = None  # dumps() of the JobOutput
    dead_lettered: bool = False

    @classmethod
    def of(cls, job: Job, *, retrying: bool = False, dead_letters: bool = True) -> Outcome:
        """The outcome of a finished run of ``job``: a failure that will be retried is QUEUED
        with its error; one that will not is FAILED (and dead-lettered, where failed jobs go
        to dead letters: not for Celery tasks)."""
        failed = job.status is ExecutionStatus.FAILED
        output = job.payload.output
        return cls(
            job.id, ExecutionStatus.QUEUED if failed and retrying else job.status, job.completed_at, job.error,
            job.traceback, None if output is None else dumps(output), failed and not retrying and dead_letters,
        )

    def columns(self) -> dict[str, str | None]:
        """The :data:`FINISH_COLUMNS` and their values as text (None: cleared)."""
        values = {name: getattr(self, name) for name in FINISH_COLUMNS}
        values["dead_lettered"] = "1" if self.dead_lettered else None
        return values


def read_record(data: str | bytes, status: str, attempts: int, columns: Mapping[str, str | bytes | None]) -> Job:
    """The job of a record: the published job (``data``, as :func:`dumps` wrote it) with the
    record's status, attempts and outcome columns laid over it (see :func:`overlay`)."""
    job = loads(data)
    assert isinstance(job, Job)
    return overlay(job, status, attempts, columns)


def overlay(job: Job, status: str, attempts: int, columns: Mapping[str, str | bytes | None]) -> Job:
    """``job`` with a record's status, attempts and outcome columns (absent or empty: None)."""
    text = {name: (value.decode() if isinstance(value, bytes) else value) or None
            for name, value in columns.items()}
    output = None if text.get("output") is None else loads(str(text["output"]))
    # a JobOutput subclass this process has not imported keeps its fields on the base class
    job.payload.output = output if output is None or isinstance(output, JobOutput) else JobOutput.model_validate(output)
    job.status, job.attempts = ExecutionStatus(status), int(attempts)
    job.started_at, job.completed_at = text.get("started_at"), text.get("completed_at")
    job.error, job.traceback = text.get("error"), text.get("traceback")
    job.dead_lettered = bool(text.get("dead_lettered"))
    return job


class Recorder:
    """Writes to a result store, or to none, and never raises: a store that fails is logged and
    counted in :attr:`failures`; the jobs go on. Thread-safe."""

    def __init__(self, store: ResultStore | None) -> None:
        self.store = store
        self.failures = 0
        self._lock = threading.Lock()

    def record(self, action: Callable[[ResultStore], _T], default: _T, on_failure: Callable[[], None] | None = None) -> _T:
        """``action(store)``; without a store, or when it fails (then ``on_failure()`` too), ``default``."""
        store = self.store
        if store is None:
            return default
        try:
            return action(store)
        except Exception as exc:  # noqa: BLE001 - a store that is down must not stop jobs
            self.failed(exc)
            if on_failure is not None:
                on_failure()
            return default

    def failed(self, exc: Exception) -> None:
        """Log and count a write that failed."""
        with self._lock:
            self.failures += 1
        logger.warning("job record not written, the job goes on: %s", exc)


class ResultStore(ABC):
    """Job records by id; thread-safe. ``url`` (password masked) names it in errors."""

    url: str

    @abstractmethod
    def save(self, queue: str, records: Sequence[JobRecord], status: ExecutionStatus = ExecutionStatus.QUEUED) -> None:
        """Record the jobs with ``status`` on ``queue`` (their attempt counts as given)."""

    @abstractmethod
    def start(self, queue: str, job_ids: Sequence[str], started_at: str) -> list[int]:
        """Record the jobs RUNNING as one more attempt; per job, the attempt count, or
        :data:`CANCELLED` (the record stays so) or :data:`MISSING` (no record: nothing written)."""

    @abstractmethod
    def finish(self, queue: str, outcomes: Sequence[Outcome]) -> None:
        """Write the outcomes of jobs that have a record; final statuses wake the waiters."""

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """QUEUED -> CANCELLED; False if the job is unknown or was taken by a worker."""

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
        records = [job_record(job, message) for job, message in zip(jobs, messages)]
        try:
            self.save_before_publish(queue, records)
        except Exception as exc:  # noqa: BLE001 - the jobs matter more than their records
            on_failure(exc)
            backend.publish(queue, messages, priority)
            return
        try:
            self.publish_recorded(backend, queue, messages, priority, records)
        except BaseException:
            for job in jobs:
                try:
                    self.forget(job.id)
                except Exception:  # noqa: BLE001 - the publish error is the one to report
                    break
            raise

    def save_before_publish(self, queue: str, records: Sequence[JobRecord]) -> None:
        """The QUEUED records of jobs about to be published (:meth:`publish`'s first step)."""
        self.save(queue, records)

    def publish_recorded(
        self, backend: Backend, queue: str, messages: Sequence[WireMessage], priority: int | None,
        records: Sequence[JobRecord],
    ) -> None:
        """Publish jobs whose ``records`` were saved (:meth:`publish`'s second step)."""
        backend.publish(queue, messages, priority)

    def close(self) -> None:
        """Release connections."""
