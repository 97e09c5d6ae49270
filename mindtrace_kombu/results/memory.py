"""The in-process result store: the default of the local backend; stores with the same name share
records (as ``LocalClient``s with the same ``broker_id`` share queues)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from ..models import ExecutionStatus, Job
from ..redis_store.records import JobRecord
from .base import CANCELLED, KEPT_ON_SAVE, MISSING, Outcome, ResultStore, read_record

__all__ = ["MemoryResultStore"]

_QUEUED, _CANCELLED = ExecutionStatus.QUEUED.value, ExecutionStatus.CANCELLED.value


@dataclass
class _Record:
    queue: str
    status: str
    attempts: int
    data: str | bytes
    order: int
    columns: dict[str, str | None] = field(default_factory=dict)


class _Records:
    """One named store's records, under one condition (waiters are notified, never poll)."""

    def __init__(self) -> None:
        self.records: dict[str, _Record] = {}
        self.changed = threading.Condition()
        self.order = itertools.count()


_NAMED: dict[str, _Records] = {}
_NAMED_LOCK = threading.Lock()


class MemoryResultStore(ResultStore):
    """Records in this process, by store name (``memory://<name>``)."""

    def __init__(self, name: str = "default") -> None:
        self.url = f"memory://{name}"
        with _NAMED_LOCK:
            self._shared = _NAMED.setdefault(name, _Records())

    def save(self, queue: str, records: Sequence[JobRecord], status: ExecutionStatus = ExecutionStatus.QUEUED) -> None:
        with self._shared.changed:
            stored = self._shared.records
            for record in records:
                old = stored.get(record.job_id)
                order = next(self._shared.order) if old is None else old.order
                kept = {} if old is None else {name: old.columns.get(name) for name in KEPT_ON_SAVE}
                stored[record.job_id] = _Record(queue, status.value, record.attempts, record.data, order, kept)

    def start(self, queue: str, job_ids: Sequence[str], started_at: str) -> list[int]:
        found = []
        with self._shared.changed:
            for job_id in job_ids:
                record = self._shared.records.get(job_id)
                if record is None or record.status == _CANCELLED:
                    found.append(MISSING if record is None else CANCELLED)
                    continue
                record.status, record.attempts = ExecutionStatus.RUNNING.value, record.attempts + 1
                record.columns["started_at"] = started_at
                found.append(record.attempts)
        return found

    def finish(self, queue: str, outcomes: Sequence[Outcome]) -> None:
        with self._shared.changed:
            for outcome in outcomes:
                record = self._shared.records.get(outcome.job_id)
                if record is not None:
                    record.status = outcome.status.value
                    record.columns.update(outcome.columns())
            self._shared.changed.notify_all()

    def cancel(self, job_id: str) -> bool:
        with self._shared.changed:
            record = self._shared.records.get(job_id)
            if record is None or record.status != _QUEUED:
                return False
            record.status = _CANCELLED
            self._shared.changed.notify_all()
            return True

    @staticmethod
    def _job(record: _Record) -> Job:
        return read_record(record.data, record.status, record.attempts, record.columns)

    def get(self, job_id: str) -> Job | None:
        with self._shared.changed:
            record = self._shared.records.get(job_id)
            return None if record is None else self._job(record)

    def list(self, queue: str | None, status: ExecutionStatus | None, limit: int) -> list[Job]:
        with self._shared.changed:
            found = [
                record for record in self._shared.records.values()
                if (queue is None or record.queue == queue) and (status is None or record.status == status.value)
            ]
            found.sort(key=lambda record: record.order, reverse=True)
            return [self._job(record) for record in found[:limit]]

    def forget(self, job_id: str) -> bool:
        with self._shared.changed:
            return self._shared.records.pop(job_id, None) is not None

    def wait(self, job_id: str, timeout: float | None) -> Job | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._shared.changed:
            while True:
                record = self._shared.records.get(job_id)
                remaining = None if deadline is None else deadline - time.monotonic()
                if record is None or ExecutionStatus(record.status).final or (remaining is not None and remaining <= 0):
                    return None if record is None else self._job(record)
                self._shared.changed.wait(remaining)
