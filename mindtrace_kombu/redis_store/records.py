"""Job records in Redis: one hash per job (``Namespace.job``), a sorted index per queue
(``Namespace.job_index``), a pub/sub channel per job for waiters; all expire after a TTL.

Every state change is one ``lua/record.lua`` call; a publish writes its records inside
``put.lua`` (``RedisStore.put(records=...)``). Records hold strings: the caller encodes jobs.
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
    """A record as read back."""

    data: bytes
    status: str
    attempts: int
    queue: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RecordStore:
    """Job records of one namespace on a redis-py client; ``ttl`` in seconds."""

    def __init__(self, client: Any, namespace: Namespace, ttl: float) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl = ttl

    def _change(
        self, op: str, job_id: str, queue: str = "", status: str = "", data: str | bytes = "", attempts: int = 0
    ) -> int:
        keys = [self.namespace.job(job_id), self.namespace.job_index(queue) if queue else self.namespace.job(job_id)]
        args = [op, int(self.ttl * 1000), self.namespace.job_done(job_id), job_id, queue, status, data, attempts]
        return int(_RECORD(self.client, keys, args))

    def save(self, queue: str, records: Sequence[JobRecord]) -> None:
        """Write ``records`` QUEUED (one pipelined round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            keys = [self.namespace.job(record.job_id), self.namespace.job_index(queue)]
            args = ["save", int(self.ttl * 1000), "", record.job_id, queue, "queued", record.data, record.attempts]
            pipe.evalsha(_RECORD.sha, 2, *keys, *args)
        try:
            pipe.execute()
        except Exception as exc:
            if "NOSCRIPT" not in str(exc):
                raise
            self.client.script_load(_RECORD.source)
            self.save(queue, records)

    def start(self, queue: str, record: JobRecord) -> int | None:
        """RUNNING unless cancelled; the attempt count, or None when cancelled."""
        attempts = self._change("start", record.job_id, queue, "running", record.data, record.attempts)
        return None if attempts < 0 else attempts

    def finish(self, queue: str, status: str, record: JobRecord) -> None:
        self._change("finish", record.job_id, queue, status, record.data, record.attempts)

    def cancel(self, job_id: str) -> bool:
        return self._change("cancel", job_id) == 1

    def get(self, job_id: str) -> StoredRecord | None:
        return self._stored(self.client.hmget(self.namespace.job(job_id), "job", "status", "attempts", "queue"))

    @staticmethod
    def _stored(raw: Sequence[Any]) -> StoredRecord | None:
        data, status, attempts, queue = raw
        if data is None or status is None:
            return None
        return StoredRecord(data if isinstance(data, bytes) else data.encode(), _text(status), int(attempts), _text(queue))

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
                pipe.hmget(self.namespace.job(job_id), "job", "status", "attempts", "queue")
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

