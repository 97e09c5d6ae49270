"""The in-process result store: the default of the local backend; stores with the same name share
records (as ``LocalClient``s with the same ``broker_id`` share queues)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from ..models import ExecutionStatus, Job
from .base import ResultStore, decode_record, encode_job

__all__ = ["MemoryResultStore"]


@dataclass
class _Record:
    queue: str
    status: str
    attempts: int
    data: str
    order: int


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

    def _write(self, queue: str, job: Job, attempts: int | None = None) -> None:
        """Store ``job`` (under the condition's lock)."""
        records = self._shared.records
        old = records.get(job.id)
        order = next(self._shared.order) if old is None else old.order
        count = job.attempts if attempts is None else attempts
        records[job.id] = _Record(queue, job.status.value, count, encode_job(job), order)
        if job.status.final:
            self._shared.changed.notify_all()

    def save(self, queue: str, jobs: Sequence[Job]) -> None:
        with self._shared.changed:
            for job in jobs:
                self._write(queue, job)

    def start(self, queue: str, job: Job) -> int | None:
        with self._shared.changed:
            old = self._shared.records.get(job.id)
            if old is not None and old.status == ExecutionStatus.CANCELLED.value:
                return None
            attempts = job.attempts if old is None else old.attempts + 1
            self._write(queue, job, attempts)
            return attempts

    def finish(self, queue: str, job: Job) -> None:
        with self._shared.changed:
            old = self._shared.records.get(job.id)
            self._write(queue, job, job.attempts if old is None else old.attempts)

    def cancel(self, job_id: str) -> bool:
        with self._shared.changed:
            record = self._shared.records.get(job_id)
            if record is None or record.status != ExecutionStatus.QUEUED.value:
                return False
            record.status = ExecutionStatus.CANCELLED.value
            self._shared.changed.notify_all()
            return True

    @staticmethod
    def _job(record: _Record) -> Job:
        return decode_record(record.data, record.status, record.attempts)

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
