"""The Redis result store: records in the broker's namespace (layout in ``redis_store/keys.py``),
written in the publish script itself when the store shares the broker's Redis."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from redis.exceptions import RedisClusterException, RedisError

from ..backends.base import Backend, WireMessage
from ..backends.wire import decode_payload
from ..decoding import DEFAULT_LIMITS, decode_job
from ..models import ExecutionStatus, Job
from ..redis_store import Namespace
from ..redis_store.records import JobRecord, RecordStore, StoredRecord
from ..serialization import dumps
from .base import (
    DEFAULT_TTL, FINISH_COLUMNS, OUTCOME_COLUMNS, Outcome, ResultStore, is_job_body, overlay, read_record,
    unavailable,
)

__all__ = ["RedisResultStore"]

_FINAL = frozenset(status.value for status in ExecutionStatus if status.final)


def _job(record: StoredRecord | None) -> Job | None:
    if record is None:
        return None
    if not record.is_payload:
        return read_record(record.data, record.status, record.attempts, record.columns)
    message, _ = decode_payload(record.data)  # written by the publish script: the message itself
    return overlay(decode_job(message, DEFAULT_LIMITS), record.status, record.attempts, record.columns)


class RedisResultStore(ResultStore):
    """Job records on a redis-py client.

    Args:
        client: a ``redis.Redis`` client.
        namespace: the key namespace (the broker's, when it is the same Redis).
        url: the server's URL, password masked.
        ttl: seconds a record lives after its last change (default 24 h).
        shares_broker: the broker is this Redis and namespace: publishes record in their script.
    """

    def __init__(
        self, client: Any, namespace: Namespace, *, url: str, ttl: float = DEFAULT_TTL, shares_broker: bool = False
    ) -> None:
        self.url = url
        self.records = RecordStore(client, namespace, ttl, OUTCOME_COLUMNS)
        self.shares_broker = shares_broker

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, RedisClusterException) as exc:
            raise unavailable(self.url, exc) from exc

    def _in_script(self, backend: Backend) -> Callable[..., None] | None:
        """The Redis backend's ``publish_recorded`` when it shares this store's Redis: its put
        script writes the records (on Redis Cluster, only their queue's index)."""
        return getattr(backend, "publish_recorded", None) if self.shares_broker else None

    def publish(
        self, backend: Backend, queue: str, messages: Sequence[WireMessage], priority: int | None,
        jobs: Sequence[Job], on_failure: Callable[[Exception], None],
    ) -> None:
        publish_recorded = self._in_script(backend)
        if publish_recorded is not None and not self.records.cluster:  # the records in the put script
            # empty data: the record keeps the message's payload, so a job body is not sent twice
            records = [(job.id, job.attempts, b"" if is_job_body(message) else dumps(job))
                       for job, message in zip(jobs, messages)]
            publish_recorded(queue, messages, priority, records, self.records.ttl)
        else:
            super().publish(backend, queue, messages, priority, jobs, on_failure)

    def save_before_publish(self, queue: str, records: Sequence[JobRecord]) -> None:
        """On Redis Cluster the records live in their jobs' slots: written here, one call per
        slot, and indexed by the publish script in the queue's slot."""
        with self._errors():
            self.records.save(queue, records, ExecutionStatus.QUEUED.value, indexed=not self.shares_broker)

    def publish_recorded(
        self, backend: Backend, queue: str, messages: Sequence[WireMessage], priority: int | None,
        records: Sequence[JobRecord],
    ) -> None:
        publish_recorded = self._in_script(backend)
        if publish_recorded is None:
            super().publish_recorded(backend, queue, messages, priority, records)
            return
        publish_recorded(queue, messages, priority, [(record.job_id, record.attempts, b"") for record in records],
                         self.records.ttl)

    def save(self, queue: str, records: Sequence[JobRecord], status: ExecutionStatus = ExecutionStatus.QUEUED) -> None:
        with self._errors():
            self.records.save(queue, records, status.value)

    def start(self, queue: str, job_ids: Sequence[str], started_at: str) -> list[int]:
        with self._errors():
            return self.records.start(job_ids, started_at)

    def finish(self, queue: str, outcomes: Sequence[Outcome]) -> None:
        changes = [(outcome.job_id, outcome.status.value, [value or "" for value in outcome.columns().values()])
                   for outcome in outcomes]
        with self._errors():
            self.records.finish(FINISH_COLUMNS, changes)

    def cancel(self, job_id: str) -> bool:
        with self._errors():
            return self.records.cancel(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._errors():
            return _job(self.records.get(job_id))

    def _queues(self) -> list[str]:
        client = self.records.client
        return sorted(name.decode() if isinstance(name, bytes) else name
                      for name in client.smembers(self.records.namespace.registry))

    def list(self, queue: str | None, status: ExecutionStatus | None, limit: int) -> list[Job]:
        with self._errors():
            queues = [queue] if queue is not None else self._queues()
            found = self.records.list(queues, None if status is None else status.value, limit)
        return [job for job in map(_job, found) if job is not None]

    def forget(self, job_id: str) -> bool:
        with self._errors():
            return self.records.forget(job_id)

    def wait(self, job_id: str, timeout: float | None) -> Job | None:
        with self._errors():
            return _job(self.records.wait(job_id, timeout, _FINAL))

    def close(self) -> None:
        self.records.client.close()
