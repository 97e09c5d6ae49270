"""Redis transport with exact fifo, stack and priority order.

Extends Kombu's Redis transport (``kombu.transport.redis``). Connection string:
``mindtrace-redis://[:password@]host[:port][/db]`` (or Celery's ``broker_transport =
"mindtrace-redis"`` with an ordinary ``redis://`` URL).

Storage layout (every key, its type, and who writes it):

===============================  ======  ==================================================
key                              type    contents
===============================  ======  ==================================================
``mindtrace.queues``             hash    queue name -> spec: ``fifo``, ``stack``, ``priority:<max>``
``<queue>`` (fifo)               list    Kombu message JSON, LPUSH / RPOP: Kombu's stock layout,
                                         readable by stock Kombu and Celery consumers
``mindtrace.z.<queue>``          zset    stack and priority messages; the lowest score pops first
``<queue>`` (stack, priority)    list    one wake-up token per message, so Kombu's BRPOP loop wakes
``mindtrace.seq``                string  global publish counter (ties broken in publish order)
``mindtrace.unacked``            hash    delivery tag -> ``[message, "", queue]`` of unacked messages
``mindtrace.unacked_index``      zset    delivery tag by delivery time (visibility timeout)
``mindtrace.wake.<queue>``       pubsub  published on every put; wakes idle workers
===============================  ======  ==================================================

The unacked keys are this package's own, apart from a host Celery app's ``unacked`` keys on the
same database.

Scores: stack ``-seq``; priority ``(255 - priority) * 2**44 + seq`` (exact in a double for 2**44
publishes). Each primitive is one Lua script, so one round trip and atomic: declare (plus one
size read), publish, ``publish_many`` (per queue), get, size, purge and delete. A synchronous
consumer (``Connection.drain_events``) takes up to its free prefetch in one script call that
pops each message and records it as unacked, and carries the acknowledgements of the previous
batch: one round trip per batch.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import time
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils.json import dumps, loads
from redis.exceptions import NoScriptError, ResponseError

from ..queues import QueueSpec, QueueType
from .base import ExactOrderChannelMixin, queue_not_found, unparseable_message

__all__ = ["Channel", "Transport", "SPECS_KEY", "ordered_key"]

SPECS_KEY = "mindtrace.queues"
SEQ_KEY = "mindtrace.seq"
_NOT_FOUND = "NOT_FOUND"

# KEYS: specs, list, zset, seq    ARGV: queue, restoring, then (message, priority) per message.
# restoring "1": unacked messages going back; they go to the front of a fifo queue (first of
# their priority), and a deleted queue drops them silently.
_PUT = """
local spec = redis.call('HGET', KEYS[1], ARGV[1])
local restoring = ARGV[2] == '1'
if not spec then
  if restoring then return 0 end
  return redis.error_reply('NOT_FOUND')
end
for i = 3, #ARGV, 2 do
  if spec == 'fifo' then
    if restoring then redis.call('RPUSH', KEYS[2], ARGV[i]) else redis.call('LPUSH', KEYS[2], ARGV[i]) end
  else
    local seq = redis.call('INCR', KEYS[4])
    local score = -seq
    if spec ~= 'stack' then
      if restoring then seq = 0 end
      score = (255 - tonumber(ARGV[i + 1])) * 17592186044416 + seq
    end
    redis.call('ZADD', KEYS[3], score, ARGV[i])
    redis.call('LPUSH', KEYS[2], '1')
  end
end
redis.call('PUBLISH', 'mindtrace.wake.' .. ARGV[1], '')
return (#ARGV - 2) / 2
"""

# KEYS: unacked, unacked_index    ARGV: delivery tags
_FORGET = """
for i = 1, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
return #ARGV
"""

# KEYS: specs, unacked, unacked_index, then (list, zset) per queue
# ARGV: now, most messages to take, number of acks, the delivery tags acknowledged since the
# last call, then the queues.
# Forgets the acknowledged tags, then pops up to the requested number of messages from the
# queues, in order, recording each as unacked in the same step: there is no moment where a
# message exists in neither place. Returns (queue, message, tag) triples; tag is '' for raw
# bytes that are not a Kombu message (the consumer dead-letters them).
_POP_RECORD = """
local acks = tonumber(ARGV[3])
for i = 4, 3 + acks do
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
local wanted, out = tonumber(ARGV[2]) * 3, {}
local first = 4 + acks
for j = first, #ARGV do
  local queue = ARGV[j]
  local list, zset = KEYS[2 + 2 * (j - first + 1)], KEYS[3 + 2 * (j - first + 1)]
  local spec = redis.call('HGET', KEYS[1], queue)
  if not spec then return redis.error_reply('NOT_FOUND ' .. queue) end
  while #out < wanted do
    local item = false
    if spec == 'fifo' then
      item = redis.call('RPOP', list)
    else
      local popped = redis.call('ZPOPMIN', zset)
      if #popped > 0 then
        item = popped[1]
        if redis.call('LLEN', list) > redis.call('ZCARD', zset) then redis.call('RPOP', list) end
      end
    end
    if not item then break end
    local ok, message = pcall(cjson.decode, item)
    local tag = ''
    if ok and type(message) == 'table' and type(message.properties) == 'table'
        and type(message.properties.delivery_tag) == 'string' then
      tag = message.properties.delivery_tag
      redis.call('HSET', KEYS[2], tag, '[' .. item .. ',"",' .. cjson.encode(queue) .. ']')
      redis.call('ZADD', KEYS[3], ARGV[1], tag)
    end
    out[#out + 1] = queue
    out[#out + 1] = item
    out[#out + 1] = tag
  end
  if #out >= wanted then break end
end
return out
"""

# KEYS: specs, list, zset    ARGV: queue
_GET = """
local spec = redis.call('HGET', KEYS[1], ARGV[1])
if not spec then return redis.error_reply('NOT_FOUND') end
if spec == 'fifo' then return redis.call('RPOP', KEYS[2]) end
local item = redis.call('ZPOPMIN', KEYS[3])
if #item == 0 then return false end
if redis.call('LLEN', KEYS[2]) > redis.call('ZCARD', KEYS[3]) then redis.call('RPOP', KEYS[2]) end
return item[1]
"""

# KEYS: specs, list, zset    ARGV: queue
_SIZE = """
local spec = redis.call('HGET', KEYS[1], ARGV[1])
if not spec then return redis.error_reply('NOT_FOUND') end
if spec == 'fifo' then return redis.call('LLEN', KEYS[2]) end
return redis.call('ZCARD', KEYS[3])
"""

# KEYS: specs, list, zset    ARGV: queue
_PURGE = """
local spec = redis.call('HGET', KEYS[1], ARGV[1])
if not spec then return redis.error_reply('NOT_FOUND') end
local size
if spec == 'fifo' then size = redis.call('LLEN', KEYS[2]) else size = redis.call('ZCARD', KEYS[3]) end
redis.call('DEL', KEYS[2], KEYS[3])
return size
"""

# KEYS: specs, list, zset    ARGV: queue
_DELETE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return redis.error_reply('NOT_FOUND') end
return redis.call('DEL', KEYS[2], KEYS[3])
"""

# KEYS: specs    ARGV: queue, spec
_DECLARE = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""


def ordered_key(queue: str) -> str:
    """The sorted set holding the messages of a stack or priority queue."""
    return f"mindtrace.z.{queue}"


@functools.lru_cache(maxsize=None)
def _sha1(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


def _keys(queue: str) -> list[str]:
    return [SPECS_KEY, queue, ordered_key(queue), SEQ_KEY]


def _encode_spec(spec: QueueSpec) -> str:
    if spec.queue_type is QueueType.PRIORITY:
        return f"priority:{spec.max_priority}"
    return str(spec.queue_type.value)


def _decode_spec(queue: str, raw: bytes | str) -> QueueSpec:
    text = raw.decode() if isinstance(raw, bytes) else raw
    kind, _, max_priority = text.partition(":")
    return QueueSpec(queue, QueueType(kind), int(max_priority) if max_priority else None)


class _PutBatch:
    """A Kombu publish batch (``Producer.batch()``) that puts each queue's messages with one
    script call at flush, instead of Kombu's pipeline of one command per message."""

    def __init__(self, channel: Channel, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self._pending: dict[str, list[Any]] = {}
        self._count = 0

    def publish(self, message: dict[str, Any], **kwargs: Any) -> Any:
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, queue: str, body: str, priority: int) -> None:
        self._pending.setdefault(queue, []).extend((body, priority))
        self._count += 1
        if self._count >= self.max_size:
            self.flush()

    def flush(self) -> None:
        pending, self._pending, self._count = self._pending, {}, 0
        for queue, args in pending.items():
            self.channel._run(_PUT, queue, 0, *args)

    def discard(self) -> None:
        self._pending, self._count = {}, 0

    def close(self) -> None:
        self.discard()


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """Kombu's Redis ack emulation, minus the second write for messages already recorded."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """Track a delivered message; the pop script already recorded it in Redis if its tag is
        in ``channel.recorded``, otherwise (Kombu's BRPOP path) record it the stock way."""
        if delivery_tag in self.channel.recorded:
            self.channel.recorded.discard(delivery_tag)
            kombu_virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """Forget an acknowledged message. A channel consumed through ``Transport.drain_events``
        sends the acknowledgement with its next pop (no round trip of its own), or before it
        waits or closes; otherwise (``basic_get``, Kombu's BRPOP loop under Celery) it is one
        script call at once (Kombu builds a MULTI pipeline)."""
        self.channel.pending_acks.append(delivery_tag)
        if not (self.channel.acks_ride_on_pops and self.channel._active_queues):
            self.channel.flush_acks()
        kombu_virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            super().reject(delivery_tag, requeue=True)
        else:
            self.ack(delivery_tag)

    def restore_unacked(self, client: Any = None) -> None:
        """Restore in reverse delivery order: each goes to the front, so the original order holds."""
        with self.channel.conn_or_acquire(client) as client:
            for tag in reversed(list(self._delivered)):
                self.restore_by_tag(tag, client=client)
        self._delivered.clear()


class Channel(ExactOrderChannelMixin, kombu_redis.Channel):  # type: ignore[misc]
    """Redis channel with exact queue order; unacked bookkeeping apart from a host Celery app's."""

    QoS = QoS
    #: Most messages one pop takes for a consumer (bounded by its prefetch).
    max_batch = 100
    unacked_key = "mindtrace.unacked"
    unacked_index_key = "mindtrace.unacked_index"
    unacked_mutex_key = "mindtrace.unacked_mutex"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Delivery tags the pop script recorded as unacked and QoS has not tracked yet.
        self.recorded: set[str] = set()
        #: Acknowledged delivery tags not yet removed from the unacked hash in Redis.
        self.pending_acks: list[str] = []
        #: True once this channel is consumed through :meth:`deliver_ready`, which sends them.
        self.acks_ride_on_pops = False

    def _call(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA one of the scripts above: one round trip (SCRIPT LOAD once per Redis start)."""
        sha = _sha1(source)
        try:
            return self.client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            self.client.script_load(source)
            return self.client.evalsha(sha, len(keys), *keys, *args)

    def close(self) -> None:
        """Send pending acknowledgements before Kombu restores what is still unacknowledged."""
        if self.pending_acks and not self.closed:
            try:
                self.flush_acks()
            except self.connection.connection_errors:
                pass  # the acknowledgements are lost: those messages come back (at least once)
        super().close()

    def create_publish_batch(self, max_size: int) -> _PutBatch:
        """Kombu's ``Producer.batch()`` hook: messages are put with one script call per queue."""
        return _PutBatch(self, max_size)

    def _run(self, source: str, queue: str, *args: Any) -> Any:
        """Run one of the scripts above for ``queue``: one round trip; a missing queue raises 404."""
        try:
            return self._call(source, _keys(queue), [queue, *args])
        except ResponseError as exc:
            if str(exc) == _NOT_FOUND:
                raise queue_not_found(queue) from None
            raise

    def _store_spec(self, spec: QueueSpec) -> QueueSpec:
        return _decode_spec(spec.name, self._run(_DECLARE, spec.name, _encode_spec(spec)))

    def queue_spec(self, queue: str) -> QueueSpec | None:
        raw = self.client.hget(SPECS_KEY, queue)
        return None if raw is None else _decode_spec(queue, raw)

    def queue_specs(self) -> list[QueueSpec]:
        return [_decode_spec(name.decode(), raw) for name, raw in self.client.hgetall(SPECS_KEY).items()]

    def unacked_counts(self) -> dict[str, int]:
        """Unacknowledged messages per queue, from this package's unacked records (one HVALS:
        O(unacknowledged messages), for operators rather than hot paths)."""
        counts: dict[str, int] = {}
        for record in self.client.hvals(self.unacked_key):
            queue = loads(record)[2]  # [message, exchange, routing key]
            counts[queue] = counts.get(queue, 0) + 1
        return counts

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        priority = message["properties"].get("priority") or 0
        batch = kwargs.pop("_publish_batch", None)
        if batch is None:
            self._run(_PUT, queue, 0, dumps(message), priority)
        else:
            batch.add(queue, dumps(message), priority)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Get one message; unless ``no_ack``, popped and recorded as unacked in one script call
        (Kombu's version pops, then records in a second command)."""
        if no_ack:
            return super().basic_get(queue, no_ack=True, **kwargs)
        found = self._pop_record([queue], 1)
        if not found:
            return None
        message = self.Message(found[0][1], channel=self)
        self.qos.append(message, message.delivery_tag)
        return message

    def _pop_record(self, queues: list[str], count: int) -> list[tuple[str, dict[str, Any]]]:
        """One script call: send the pending acknowledgements, then take up to ``count``
        messages of ``queues``, each recorded as unacked (raw bytes that are no Kombu message
        come back wrapped, unrecorded, to be dead-lettered)."""
        keys = [SPECS_KEY, self.unacked_key, self.unacked_index_key]
        for queue in queues:
            keys += [queue, ordered_key(queue)]
        acks, self.pending_acks = self.pending_acks, []
        args: list[str | int | float] = [time.time(), count, len(acks), *acks, *queues]
        try:
            found = self._call(_POP_RECORD, keys, args)
        except ResponseError as exc:
            missing = str(exc).partition(f"{_NOT_FOUND} ")[2]
            if missing:
                raise queue_not_found(missing) from None
            raise
        messages = []
        for queue, item, tag in zip(found[::3], found[1::3], found[2::3]):
            if tag:
                self.recorded.add(tag.decode())
                messages.append((queue.decode(), loads(item)))
            else:
                messages.append((queue.decode(), unparseable_message(item, queue.decode(), self._next_delivery_tag())))
        return messages

    def flush_acks(self) -> None:
        """Remove acknowledged tags from the unacked hash and index. One round trip."""
        acks, self.pending_acks = self.pending_acks, []
        if acks:
            self._call(_FORGET, [self.unacked_key, self.unacked_index_key], list(acks))

    def deliver_ready(self) -> bool:
        """Take as many messages of the consumed queues as prefetch allows (at most
        ``max_batch``), recorded as unacked, and deliver them to their consumers. One round trip;
        False when the queues are empty or prefetch is full."""
        queues = list(self._active_queues)
        room = self.qos.can_consume_max_estimate()
        if not queues or room == 0:
            return False
        self.acks_ride_on_pops = True
        found = self._pop_record(queues, min(room or self.max_batch, self.max_batch))
        if not found:
            return False
        self._active_queues.append(self._active_queues.pop(0))  # round robin across queues
        for queue, message in found:
            self.connection._deliver(message, queue)
        return True

    def _do_restore_message(
        self, payload: dict[str, Any], exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        """Put an unacked message back into its queue.

        Replaces Kombu's version, which LPUSHes into the queue's list: for a stack or priority
        queue that list only holds wake-up tokens. A fifo message goes back to the front.
        """
        payload.setdefault("headers", {})["redelivered"] = True
        payload["properties"].setdefault("delivery_info", {})["redelivered"] = True
        priority = payload["properties"].get("priority") or 0
        script = self.client.register_script(_PUT)  # in Kombu's restore transaction (a pipeline)
        for queue in self._lookup(exchange, routing_key):
            script(keys=_keys(queue), args=[queue, 1, dumps(payload), priority], client=pipe)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        item = self._run(_GET, queue)
        if item is None:
            raise Empty()
        try:
            message = loads(item)
            message["properties"]["delivery_tag"]  # noqa: B018 - a Kombu message has one
        except (ValueError, TypeError, KeyError):
            return unparseable_message(item, queue, self._next_delivery_tag())
        return message  # type: ignore[no-any-return]

    def _size(self, queue: str) -> int:
        return int(self._run(_SIZE, queue))

    def _purge(self, queue: str) -> int:
        return int(self._run(_PURGE, queue))

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._run(_DELETE, queue)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """Redis transport with exact fifo, stack and priority order."""

    Channel = Channel
    driver_name = "mindtrace-redis"

    #: Seconds between sweeps that restore unacked messages past their visibility timeout.
    restore_interval = 1.0
    #: Longest wait for a wake-up before the queues are polled again (stock producers and
    #: restored messages publish none).
    wakeup_poll_interval = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wakeups: Any = None
        self._wakeup_channels: set[str] = set()
        self._next_restore = 0.0

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver one message to a consumer of this connection.

        Replaces Kombu's BRPOP loop for synchronous consumers: BRPOP pops a message and a second
        command records it as unacked, so a crash in between loses it. Here one script does
        both (:meth:`Channel.deliver_ready`), and carries the acknowledgements of the previous
        batch. When every queue is empty, send pending acknowledgements and wait for a wake-up
        that every put publishes. Each sweep also restores the unacked messages of dead
        consumers whose visibility timeout has passed. Celery's event loop still uses Kombu's
        BRPOP path.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._restore_visible()
            if any([channel.deliver_ready() for channel in list(self.channels)]):
                return
            for channel in self.channels:
                channel.flush_acks()
            wait = self.wakeup_poll_interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise socket.timeout()
            self._wait_for_wakeup(wait)

    def _restore_visible(self) -> None:
        now = time.monotonic()
        if now >= self._next_restore and self.channels:
            self._next_restore = now + self.restore_interval
            self.channels[0].qos.restore_visible(num=100, interval=1)

    def _wait_for_wakeup(self, timeout: float) -> None:
        wanted = {f"mindtrace.wake.{queue}" for channel in self.channels for queue in channel._active_queues}
        if not wanted:
            time.sleep(timeout)
            return
        if self._wakeups is None:
            self._wakeups = self.channels[0].client.pubsub(ignore_subscribe_messages=True)
        if wanted != self._wakeup_channels:
            if stale := self._wakeup_channels - wanted:
                self._wakeups.unsubscribe(*stale)
            self._wakeups.subscribe(*(wanted - self._wakeup_channels))
            self._wakeup_channels = wanted
            return  # a put may have happened before the subscription: poll again first
        if self._wakeups.get_message(timeout=timeout) is not None:
            while self._wakeups.get_message(timeout=0) is not None:
                pass  # one sweep serves every wake-up that is already here

    def close_connection(self, connection: Any) -> None:
        if self._wakeups is not None:
            self._wakeups.close()
            self._wakeups, self._wakeup_channels = None, set()
        super().close_connection(connection)

    def _deliver(self, message: Any, queue: str) -> None:
        """Deliver what Kombu's BRPOP loop popped.

        For a stack or priority queue that is a wake-up token, not a message: swap it for the
        queue's best message (one script call) before handing it to the consumer callback.
        """
        if not isinstance(message, dict):
            message = self.channels[0]._get(queue)  # raises Empty if another consumer won
        super()._deliver(message, queue)
