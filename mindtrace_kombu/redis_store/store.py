"""The Redis store: queues with exact fifo, stack and priority order, and leases; no Kombu.

Payloads are opaque bytes to the store (the backends store Kombu's virtual-transport JSON).
Key layout: :mod:`.keys`; scripts: ``lua/`` (each lists its KEYS and ARGV). Round trips:

============================  ===============================================================
operation                     round trips
============================  ===============================================================
declare                       1 (script and registry update, pipelined)
put (n messages)              1 per 1,000 messages (job records, if given, in the same script call;
                              with wait_replicas, WAIT pipelined with it)
take / get / settle           1 (acks, requeues, expired leases and the take in one script)
count, purge, release, peek   1
announce, workers             1 (the registry: one hash, its lapsed entries dropped as it is read)
delete                        2 (the script, then the registry update: only once it succeeded)
wait                          1 BRPOP on the queues' and the consumer's wake-up lists (blocks up to
                              ``timeout``; on Redis Cluster on one slot's lists at a time)
wake                          1 (LPUSH and EXPIRE, pipelined; on Redis Cluster one per slot)
heartbeat                     1 per queue the lease holds messages in
============================  ===============================================================

Server-side cost is O(log n) per message for put and take; purge and delete are O(n).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from redis.exceptions import ConnectionError, MovedError, NoScriptError, ResponseError, TimeoutError

from ..errors import QueueNotEmpty, QueueNotFound
from ..queues import QueueSpec, QueueType
from .keys import Namespace
from .scripts import load
from .slots import by_slot, is_cluster

__all__ = ["DEFAULT_LEASE_TIMEOUT", "DEFAULT_WAIT_TIMEOUT", "NotReplicated", "RedisStore", "Stored", "new_lease_id"]

#: Seconds a consumer's messages stay in flight without a heartbeat before they return.
DEFAULT_LEASE_TIMEOUT = 30.0
#: Seconds a publish waits for ``wait_replicas`` replicas to acknowledge it (Redis ``WAIT``).
DEFAULT_WAIT_TIMEOUT = 5.0
_PUT_CHUNK = 1000
_FLAG, _BAND = 2**44, 2**45
_WAKE_TTL = 60  # seconds a consumer's wake-up token outlives a consumer that is gone

_DECLARE = load("declare", with_lib=False)
_PUT = load("put")
_TAKE = load("take")
_RELEASE = load("release")
_COUNT = load("count")
_PURGE = load("purge")
_DELETE = load("delete")
_PEEK = load("peek")
_WORKERS = load("workers")


class NotReplicated(Exception):
    """Fewer replicas than asked acknowledged a put within the wait timeout: the messages are on
    the master, and a failover before they reach a replica would lose them."""

    def __init__(self, queue: str, count: int, acknowledged: int, wanted: int, timeout: float) -> None:
        super().__init__(f"{count} messages for {queue!r} reached {acknowledged} of {wanted} replicas within {timeout:g}s")
        self.queue, self.count, self.acknowledged, self.wanted, self.timeout = queue, count, acknowledged, wanted, timeout


def new_lease_id() -> str:
    """A fresh lease id (hex: no ``|``, which separates the fields of in-flight members)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Stored:
    """A message taken from a queue: its in-flight member and its payload."""

    queue: str
    member: str
    payload: bytes

    @property
    def redelivered(self) -> bool:
        """It was in flight before and came back (requeued, released, or its lease expired)."""
        lease_len = self.member.index("|")
        score = int(self.member[lease_len + 1:lease_len + 17])
        return score % _BAND < _FLAG


class RedisStore:
    """Queues in one Redis namespace; thread-safe (redis-py's client pools connections).

    Args:
        client: a ``redis.Redis`` client (its pool is shared by every thread).
        namespace: where the keys live (Kombu's ``global_keyprefix`` and this package's prefix).
        lease_timeout: seconds before the messages of a lease that was not renewed return.
    """

    def __init__(
        self, client: Any, namespace: Namespace = Namespace(), *, lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        wait_replicas: int = 0, wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> None:
        if lease_timeout <= 0:
            raise ValueError("lease_timeout must be a positive number of seconds")
        self.client = client
        self.namespace = namespace
        self.lease_timeout = lease_timeout
        self._lease_ms = max(1, int(lease_timeout * 1000))
        self.wait_replicas = wait_replicas
        self._wait_ms = max(1, int(wait_timeout * 1000))
        #: The client is a Redis Cluster client: every script touches one slot, and a BRPOP or
        #: ``WAIT`` must reach the node that holds the keys.
        self.cluster = is_cluster(client)

    def _run(self, script: Any, queue: str, args: Sequence[Any], extra_keys: Sequence[str] = ()) -> Any:
        try:
            return script(self.client, [*self.namespace.queue(queue).all(), *extra_keys], args)
        except ResponseError as exc:
            raise self._translated(queue, exc) from None

    @staticmethod
    def _translated(queue: str, exc: Exception) -> Exception:
        """A script's ``NOT_FOUND``/``NOT_EMPTY`` error as this package's, else ``exc``."""
        message = str(exc)
        if message.startswith("NOT_FOUND"):
            return QueueNotFound(queue)
        if message.startswith("NOT_EMPTY"):
            return QueueNotEmpty(queue)
        return exc

    # -- queues ----------------------------------------------------------------------------------

    def declare(self, spec: QueueSpec) -> QueueSpec:
        """Create the queue unless it exists; returns the spec stored (the first declarer's)."""
        pipe = self.client.pipeline(transaction=False)
        _DECLARE.queue_on(pipe, [self.namespace.queue(spec.name).meta], [spec.queue_type.value, spec.max_priority or ""])
        pipe.sadd(self.namespace.registry, spec.name)
        try:
            stored, _ = pipe.execute()
        except NoScriptError:
            self.client.script_load(_DECLARE.source)
            return self.declare(spec)
        found = _spec(spec.name, stored)
        assert found is not None  # the script stored it
        return found

    def spec(self, queue: str) -> QueueSpec | None:
        """The spec of ``queue``, or None when it was never declared."""
        return _spec(queue, self.client.hmget(self.namespace.queue(queue).meta, "type", "max"))

    def specs(self) -> list[QueueSpec]:
        """Every declared queue (names whose queue has gone, e.g. expired, are left out)."""
        names = sorted(name.decode() if isinstance(name, bytes) else name for name in self.client.smembers(self.namespace.registry))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.namespace.queue(name).meta, "type", "max")
        found = (_spec(name, raw) for name, raw in zip(names, pipe.execute()))
        return [spec for spec in found if spec is not None]

    def count(self, queue: str) -> int:
        """Ready messages (messages of expired leases are ready again)."""
        return int(self._run(_COUNT, queue, ()))

    def purge(self, queue: str) -> int:
        """Drop the ready messages; in-flight ones stay. Returns how many were dropped."""
        return int(self._run(_PURGE, queue, ()))

    def delete(self, queue: str, *, if_empty: bool = False) -> None:
        """Delete the queue and its messages (with ``if_empty``: only if it holds none). Two
        round trips: the registry lives in another hash slot, and keeps a queue that was kept."""
        self._run(_DELETE, queue, ("1" if if_empty else "0",))
        self.client.srem(self.namespace.registry, queue)

    def expire(self, queue: str, milliseconds: int) -> None:
        """Let every key of ``queue`` expire after ``milliseconds`` unless renewed (Kombu's
        ``x-expires``); the registry forgets the name when it is listed after that."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.namespace.queue(queue).all():
            pipe.pexpire(key, milliseconds)
        pipe.execute()

    # -- messages --------------------------------------------------------------------------------

    def put(
        self, queue: str, items: Sequence[tuple[bytes | str, int]], records: Sequence[tuple[str, int, bytes | str]] = (),
        *, record_ttl: float = 0.0,
    ) -> int:
        """Put ``(payload, priority)`` items in order; priorities above the queue's maximum
        are capped at it, and ignored on fifo and stack queues. Returns how many.

        ``records`` (``(job id, attempts, job data)`` per item, or none) are written QUEUED in
        the same script call (:mod:`.records`), holding the job data, or the item's payload when
        the data is empty; they expire after ``record_ttl`` seconds. On Redis Cluster the records
        live in other slots: the caller writes them first (``RecordStore.save(indexed=False)``)
        and the script only adds them to the queue's index."""
        for start in range(0, len(items), _PUT_CHUNK):
            chunk = items[start:start + _PUT_CHUNK]
            args: list[Any] = [part for payload, priority in chunk for part in (payload, priority)]
            keys: list[str] = []
            if records:
                batch = records[start:start + _PUT_CHUNK]
                keys = [self.namespace.job_index(queue)]
                if not self.cluster:  # on a cluster the records were written in their own slots
                    keys += [self.namespace.job(record[0]) for record in batch]
                args += [int(record_ttl * 1000), queue, int(time.time() * 1000), *(part for record in batch for part in record)]
            if self.wait_replicas:
                self._put_replicated(queue, args, keys, len(chunk))
            else:
                self._run(_PUT, queue, args, keys)
        return len(items)

    def _put_replicated(self, queue: str, args: Sequence[Any], extra_keys: Sequence[str], count: int) -> None:
        """``put.lua`` and ``WAIT`` in one pipelined round trip; raises :class:`NotReplicated`
        unless ``wait_replicas`` replicas acknowledged the put within the wait timeout."""
        keys = [*self.namespace.queue(queue).all(), *extra_keys]
        pipe = self._node_of(keys[0]).pipeline(transaction=False)
        _PUT.queue_on(pipe, keys, args)
        pipe.execute_command("WAIT", self.wait_replicas, self._wait_ms)
        try:
            put, acknowledged = pipe.execute(raise_on_error=False)
        except (ConnectionError, TimeoutError):
            if self.cluster:  # the node is down: learn the slots anew before the caller retries
                self.client.nodes_manager.initialize()
            raise
        if isinstance(put, NoScriptError):  # a new server
            self.client.script_load(_PUT.source)
            self._put_replicated(queue, args, extra_keys, count)
            return
        if isinstance(put, MovedError):  # the slot has another master now
            self.client.nodes_manager.initialize()
            self._put_replicated(queue, args, extra_keys, count)
            return
        if isinstance(put, Exception):
            raise self._translated(queue, put)
        if isinstance(acknowledged, Exception):
            raise acknowledged
        if int(acknowledged) < self.wait_replicas:
            raise NotReplicated(queue, count, int(acknowledged), self.wait_replicas, self._wait_ms / 1000)

    def disconnect(self, *, in_use: bool = True) -> None:
        """Close the client's pooled connections (only the idle ones unless ``in_use``; on
        Redis Cluster every node's)."""
        if self.cluster:
            self.client.disconnect_connection_pools()
        else:
            self.client.connection_pool.disconnect(inuse_connections=in_use)

    def _node_of(self, key: str) -> Any:
        """A client of the server that holds ``key``: the client itself, or on Redis Cluster
        the master of the key's slot (for commands that must reach that node, as ``WAIT``)."""
        if not self.cluster:
            return self.client
        return self.client.get_redis_connection(self.client.get_node_from_key(key))

    def take(
        self, queue: str, lease: str, count: int, *, acks: Sequence[str] = (), requeues: Sequence[str] = ()
    ) -> list[Stored]:
        """Settle ``acks`` and ``requeues`` (members of ``lease``), release expired leases, then
        take up to ``count`` messages in flight under ``lease`` -- or for good when ``lease``
        is ``""`` -- and renew the lease. One round trip."""
        args = [lease, self._lease_ms, count, len(acks), len(requeues), *acks, *requeues]
        found = self._run(_TAKE, queue, args)
        return [Stored(queue, member.decode(), payload) for member, payload in zip(found[::2], found[1::2])]

    def get(self, queue: str) -> Stored | None:
        """Take the next ready message for good (at most once)."""
        found = self.take(queue, "", 1)
        return found[0] if found else None

    def release(self, queue: str, lease: str) -> int:
        """Everything ``lease`` holds in ``queue`` goes back, first in line, in original order."""
        return int(self._run(_RELEASE, queue, (lease,)))

    def slot_groups(self, queues: Sequence[str]) -> list[list[str]]:
        """``queues`` grouped by hash slot (:func:`.slots.by_slot`): a BRPOP cannot span slots."""
        return by_slot(self.client, queues, lambda queue: self.namespace.queue(queue).wake)

    def wait(self, queues: Sequence[str], timeout: float, consumer: str, turn: int = 0) -> str | None:
        """Block until one of ``queues`` has a ready message, :meth:`wake` is called for
        ``consumer``, or ``timeout`` passes; returns that queue (one wake-up token consumed), or
        None. Take from it with :meth:`take`.

        On Redis Cluster one BRPOP waits on the queues of one slot only (the ``turn``-th of the
        slots ``queues`` span, in :meth:`slot_groups` order), for ``timeout`` divided by the
        number of slots: a caller that counts ``turn`` up waits on every slot within
        ``timeout``."""
        groups = self.slot_groups(queues)
        group = groups[turn % len(groups)]
        own = self.namespace.consumer_wake(consumer, group[0])
        keys = [self.namespace.queue(queue).wake for queue in group] + [own]
        reply = self.client.brpop(keys, timeout=max(timeout / len(groups), 0.001))
        if reply is None:
            return None
        key = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        return None if key == own else self.namespace.queue_of_wake_key(key)

    def wake(self, consumer: str, queues: Sequence[str]) -> None:
        """End the :meth:`wait` of ``consumer`` on ``queues`` (a token in each slot they span;
        a token expires if nobody waits for it)."""
        pipe = self.client.pipeline(transaction=False)
        for group in self.slot_groups(queues):
            key = self.namespace.consumer_wake(consumer, group[0])
            pipe.lpush(key, 1).expire(key, _WAKE_TTL)
        pipe.execute()

    def peek(self, queue: str, limit: int) -> list[tuple[bytes, bool]]:
        """Up to ``limit`` ready payloads in delivery order, left in the queue, each with
        whether it was delivered before. One round trip."""
        found = self._run(_PEEK, queue, (limit,))
        return [(payload, float(score) % _BAND < _FLAG) for score, payload in zip(found[::2], found[1::2])]

    def announce(self, worker_id: str, info: str, ttl: float) -> None:
        """List worker ``worker_id`` with ``info`` for ``ttl`` seconds (server clock)."""
        _WORKERS(self.client, [self.namespace.workers], ["announce", worker_id, info, max(1, int(ttl * 1000))])

    def forget_worker(self, worker_id: str) -> None:
        _WORKERS(self.client, [self.namespace.workers], ["forget", worker_id])

    def workers(self) -> list[bytes]:
        """The infos of the workers whose entries have not lapsed (lapsed ones are dropped)."""
        return list(_WORKERS(self.client, [self.namespace.workers], ["list"]))

    def published_counts(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages ever put in each queue (the publish sequence; missing queues left out).
        One pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            pipe.hget(self.namespace.queue(queue).meta, "seq")
        return {queue: int(seq) for queue, seq in zip(queues, pipe.execute()) if seq is not None}

    def inflight_counts(self) -> dict[str, int]:
        """Messages in flight per declared queue. O(queues)."""
        names = [spec.name for spec in self.specs()]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.zcard(self.namespace.queue(name).inflight)
        return dict(zip(names, (int(n) for n in pipe.execute())))


def _spec(queue: str, raw: Sequence[Any]) -> QueueSpec | None:
    kind, max_priority = (value.decode() if isinstance(value, bytes) else value for value in raw)
    if kind is None:
        return None
    return QueueSpec(queue, QueueType(kind), int(max_priority) if max_priority else None)
