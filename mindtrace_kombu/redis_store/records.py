"""Job records in Redis: one hash per job (``Namespace.job``), a sorted index per queue
(``Namespace.job_index``), a pub/sub channel per job for waiters; all expire after a TTL.

Every batch of state changes is one ``lua/record.lua`` call (its keys span the jobs' slots: on
Redis Cluster a batch would have to be split by slot); a publish writes its records inside
``put.lua`` (``RedisStore.put(records=...)``). Records hold strings: the caller encodes jobs and
names the outcome columns.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any, Iterator, NamedTuple, Sequence

from .keys import Namespace
from .scripts import load

__all__ = ["JobRecord", "RecordStore", "StoredRecord"]

_RECORD = load("record")
_PAGE = 200
_WAIT_SLICE = 5.0  # seconds a waiter listens before reading the record again (a missed message)


class JobRecord(NamedTuple):
    """What a publish records: the job id, its encoded job (UTF-8 JSON), its attempt count."""

    job_id: str
    data: str | bytes
    attempts: int


class StoredRecord(NamedTuple):
    """A record as read back: the published job (``data``: the encoded job, or the message
    payload holding it when ``is_payload``), status, attempts, queue, outcome columns."""

    data: bytes
    is_payload: bool
    status: str
    attempts: int
    queue: str
    columns: dict[str, Any]


_FIELDS = ("job", "payload", "status", "attempts", "queue")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RecordStore:
    """Job records of one namespace on a redis-py client; ``ttl`` in seconds; each batch is
    one round trip."""

    def __init__(self, client: Any, namespace: Namespace, ttl: float, outcome_columns: Sequence[str]) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl = ttl
        self._ttl_ms = int(ttl * 1000)
        self._columns = tuple(outcome_columns)

    def _call(self, op: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        """One ``record.lua`` call: one round trip."""
        return _RECORD(self.client, keys, [op, self._ttl_ms, *args])

    def save(self, queue: str, records: Sequence[JobRecord], status: str) -> None:
        """Write ``records`` with ``status``."""
        if records:
            keys = [self.namespace.job_index(queue), *(self.namespace.job(record.job_id) for record in records)]
            self._call("save", keys, [queue, status, *(part for record in records for part in record)])

    def start(self, job_ids: Sequence[str], started_at: str) -> list[int]:
        """RUNNING unless cancelled; per job the attempt count, -1 cancelled, 0 no record."""
        if not job_ids:
            return []
        found = self._call("start", [self.namespace.job(job_id) for job_id in job_ids], [started_at])
        return [int(attempts) for attempts in found]

    def finish(self, columns: Sequence[str], changes: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        """``(job id, status, values of columns)`` per job; an empty value clears a column."""
        if changes:
            keys = [self.namespace.job(job_id) for job_id, _, _ in changes]
            values = [part for _, status, row in changes for part in (status, *row)]
            self._call("finish", keys, [len(columns), *columns, *values])

    def cancel(self, job_id: str) -> bool:
        return bool(self._call("cancel", [self.namespace.job(job_id)]) == 1)

    def get(self, job_id: str) -> StoredRecord | None:
        return self._stored(self.client.hmget(self.namespace.job(job_id), *_FIELDS, *self._columns))

    def _stored(self, raw: Sequence[Any]) -> StoredRecord | None:
        job, payload, status, attempts, queue = raw[:5]
        data = payload if job is None else job
        if data is None or status is None:
            return None
        return StoredRecord(data if isinstance(data, bytes) else data.encode(), job is None, _text(status),
                            int(attempts), _text(queue), dict(zip(self._columns, raw[5:])))

    def forget(self, job_id: str) -> bool:
        key = self.namespace.job(job_id)
        queue = self.client.hget(key, "queue")
        pipe = self.client.pipeline(transaction=False).delete(key)
        if queue is not None:
            pipe.zrem(self.namespace.job_index(_text(queue)), job_id)
        return bool(pipe.execute()[0])

    def _ids(self, queue: str) -> Iterator[tuple[float, str]]:
        """``(-time, id)`` of ``queue``'s records, newest first, a page per round trip."""
        index, start = self.namespace.job_index(queue), 0
        while True:
            page = self.client.zrevrange(index, start, start + _PAGE - 1, withscores=True)
            for member, score in page:
                yield -float(score), _text(member)
            if len(page) < _PAGE:
                return
            start += _PAGE

    def list(self, queues: Sequence[str], status: str | None, limit: int) -> list[StoredRecord]:
        """Records of ``queues``, newest first; expired or forgotten ones are skipped."""
        merged = heapq.merge(*(self._ids(queue) for queue in queues))
        found: list[StoredRecord] = []
        while len(found) < limit:
            batch = [job_id for _, job_id in itertools.islice(merged, _PAGE)]
            if not batch:
                break
            pipe = self.client.pipeline(transaction=False)
            for job_id in batch:
                pipe.hmget(self.namespace.job(job_id), *_FIELDS, *self._columns)
            for raw in pipe.execute():
                record = self._stored(raw)
                if record is not None and (status is None or record.status == status):
                    found.append(record)
        return found[:limit]

    def wait(self, job_id: str, timeout: float | None, final: frozenset[str]) -> StoredRecord | None:
        """The record once its status is in ``final`` (or at the timeout); woken by the job's
        channel, not by polling (the record is read again at most every 5 s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.namespace.job_done(job_id))
            while True:
                record = self.get(job_id)
                remaining = None if deadline is None else deadline - time.monotonic()
                if record is None or record.status in final or (remaining is not None and remaining <= 0):
                    return record
                listen_until = time.monotonic() + min(_WAIT_SLICE, _WAIT_SLICE if remaining is None else remaining)
                while (left := listen_until - time.monotonic()) > 0:
                    if pubsub.get_message(timeout=left) is not None:
                        break
        finally:
            pubsub.close()

