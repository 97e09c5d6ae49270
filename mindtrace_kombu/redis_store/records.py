"""Job records in Redis: one hash per job (``Namespace.job``), a sorted index per queue
(``Namespace.job_index``), a pub/sub channel per job for waiters; all expire after a TTL.

Every batch of state changes is one ``lua/record.lua`` call; a publish writes its records inside
``put.lua`` (``RedisStore.put(records=...)``). On Redis Cluster, where the records of a batch
live in many slots, a batch is one call per slot (several: one pipeline, a round trip per
master); a publish saves its records first without the queue's index, which ``put.lua`` updates
in the queue's slot, and any other save updates the index in a call of its own. Records hold strings: the caller
encodes jobs and names the outcome columns.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any, Iterator, NamedTuple, Sequence

from redis.exceptions import NoScriptError

from .keys import Namespace
from .scripts import load
from .slots import by_slot, is_cluster

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
        #: On Redis Cluster: a batch is split by slot, and nothing is written in a queue's script.
        self.cluster = is_cluster(client)

    def _call(self, op: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        """One ``record.lua`` call: one round trip."""
        return _RECORD(self.client, keys, [op, self._ttl_ms, *args])

    def _slots(self, job_ids: Sequence[str]) -> list[list[int]]:
        """Positions of ``job_ids`` grouped by their record's slot (:func:`.slots.by_slot`)."""
        return by_slot(self.client, range(len(job_ids)), lambda at: self.namespace.job(job_ids[at]))

    def _calls(self, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
        """``record.lua`` calls ``(keys, args after the op's TTL)``, pipelined when more than one
        (on Redis Cluster a round trip per master); a call refused with ``NOSCRIPT`` is sent
        again once the script is loaded, and only that call."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [_RECORD(self.client, keys, args)]
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            _RECORD.queue_on(pipe, keys, args)
        replies = pipe.execute(raise_on_error=False)
        missing = [at for at, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self.client.script_load(_RECORD.source)
            for at, reply in zip(missing, self._calls([calls[at] for at in missing])):
                replies[at] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return list(replies)

    def _per_slot(self, op: str, job_ids: Sequence[str], head: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[Any]:
        """``op`` on the records of ``job_ids`` (``rows[i]``: job ``i``'s arguments after
        ``head``), a call per slot; the replies of ops that answer per job, in ``job_ids`` order."""
        groups = self._slots(job_ids)
        replies = self._calls([
            ([self.namespace.job(job_ids[at]) for at in group],
             [op, self._ttl_ms, *head, *(part for at in group for part in rows[at])])
            for group in groups
        ])
        found: list[Any] = [None] * len(job_ids)
        for group, reply in zip(groups, replies):
            if isinstance(reply, list):
                for at, value in zip(group, reply):
                    found[at] = value
        return found

    def save(self, queue: str, records: Sequence[JobRecord], status: str, *, indexed: bool = True) -> None:
        """Write ``records`` with ``status``. On Redis Cluster, ``indexed=False`` leaves the
        queue's index to the publish script (its slot), and a batch in one slot is one call."""
        if not records:
            return
        index = self.namespace.job_index(queue)
        rows = [tuple(record) for record in records]
        if not self.cluster:
            keys = [index, *(self.namespace.job(record.job_id) for record in records)]
            self._call("save", keys, [queue, status, "1", *(part for row in rows for part in row)])
            return
        job_ids = [record.job_id for record in records]
        groups = self._slots(job_ids)
        self._calls([
            *(([self.namespace.job(job_ids[at]) for at in group],
               ["save", self._ttl_ms, queue, status, "0", *(part for at in group for part in rows[at])])
              for group in groups),
            *([([index], ["index", self._ttl_ms, *job_ids])] if indexed else []),
        ])

    def start(self, job_ids: Sequence[str], started_at: str) -> list[int]:
        """RUNNING unless cancelled; per job the attempt count, -1 cancelled, 0 no record."""
        if not job_ids:
            return []
        return [int(attempts) for attempts in self._per_slot("start", job_ids, [started_at], [()] * len(job_ids))]

    def finish(self, columns: Sequence[str], changes: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        """``(job id, status, values of columns)`` per job; an empty value clears a column."""
        if changes:
            self._per_slot("finish", [job_id for job_id, _, _ in changes], [len(columns), *columns],
                           [(status, *row) for _, status, row in changes])

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
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(key)  # (a Redis Cluster pipeline's commands do not return the pipeline)
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

