"""The Redis result store: records in the broker's namespace (layout in ``redis_store/keys.py``),
written in the publish script itself when the store shares the broker's Redis."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from redis.exceptions import RedisError

from ..backends.base import Backend, WireMessage
from ..models import ExecutionStatus, Job
from ..redis_store import Namespace
from ..redis_store.records import JobRecord, RecordStore, StoredRecord
from ..serialization import CONTENT_TYPE
from .base import DEFAULT_TTL, ResultStore, decode_record, encode_job, unavailable

__all__ = ["RedisResultStore"]

_FINAL = frozenset(status.value for status in ExecutionStatus if status.final)


def _record(job: Job, message: WireMessage | None = None) -> JobRecord:
    """The job's record; a message that is the job itself (the default message builder) lends
    its encoded body, so the job is not encoded twice."""
    if message is not None and message.content_type == CONTENT_TYPE:
        return JobRecord(job.id, message.body, job.attempts)
    return JobRecord(job.id, encode_job(job), job.attempts)


def _job(record: StoredRecord | None) -> Job | None:
    return None if record is None else decode_record(record.data, record.status, record.attempts)


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
        self.records = RecordStore(client, namespace, ttl)
        self.shares_broker = shares_broker

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise unavailable(self.url, exc) from exc

    def publish(
        self, backend: Backend, queue: str, messages: Sequence[WireMessage], priority: int | None,
        jobs: Sequence[Job], on_failure: Callable[[Exception], None],
    ) -> None:
        publish_recorded = getattr(backend, "publish_recorded", None) if self.shares_broker else None
        if publish_recorded is not None:  # the Redis backend: records in its put script
            records = [_record(job, message) for job, message in zip(jobs, messages)]
            publish_recorded(queue, messages, priority, records, self.records.ttl)
        else:
            super().publish(backend, queue, messages, priority, jobs, on_failure)

    def save(self, queue: str, jobs: Sequence[Job]) -> None:
        with self._errors():
            self.records.save(queue, [_record(job) for job in jobs])

    def start(self, queue: str, job: Job) -> int | None:
        with self._errors():
            return self.records.start(queue, _record(job))

    def finish(self, queue: str, job: Job) -> None:
        with self._errors():
            self.records.finish(queue, job.status.value, _record(job))

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
