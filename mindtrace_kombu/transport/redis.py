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
size read), publish, get, size, purge and delete. A synchronous consumer
(``Connection.drain_events``) takes each message in one script call that pops it and records it
as unacked, and acknowledges in one more: two round trips per message.
"""

from __future__ import annotations

import socket
import time
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils.json import dumps, loads
from redis.commands.core import Script
from redis.exceptions import ResponseError

from ..queues import QueueSpec, QueueType
from .base import ExactOrderChannelMixin, queue_not_found, unparseable_message

__all__ = ["Channel", "Transport", "SPECS_KEY", "is_queue_not_found", "ordered_key"]

SPECS_KEY = "mindtrace.queues"
SEQ_KEY = "mindtrace.seq"
_NOT_FOUND = "NOT_FOUND"

# KEYS: specs, list, zset, seq    ARGV: queue, message, priority, restoring ("1": an unacked
# message going back; it goes to the front of a fifo queue and a deleted queue drops it silently)
_PUT = """
local spec = redis.call('HGET', KEYS[1], ARGV[1])
if not spec then
  if ARGV[4] == '1' then return 0 end
  return redis.error_reply('NOT_FOUND')
end
if spec == 'fifo' then
  if ARGV[4] == '1' then redis.call('RPUSH', KEYS[2], ARGV[2]) else redis.call('LPUSH', KEYS[2], ARGV[2]) end
else
  local seq = redis.call('INCR', KEYS[4])
  local score = -seq
  if spec ~= 'stack' then
    if ARGV[4] == '1' then seq = 0 end  -- restored: first among its priority
    score = (255 - tonumber(ARGV[3])) * 17592186044416 + seq
  end
  redis.call('ZADD', KEYS[3], score, ARGV[2])
  redis.call('LPUSH', KEYS[2], '1')
end
redis.call('PUBLISH', 'mindtrace.wake.' .. ARGV[1], '')
return 1
"""

# KEYS: specs, unacked, unacked_index, then (list, zset) per queue    ARGV: now, queue...
# Pops the first available message of the queues, in order, and records it as unacked in the
# same step: there is no moment where it exists in neither place.
_POP_RECORD = """
for j = 1, #ARGV - 1 do
  local queue = ARGV[j + 1]
  local list, zset = KEYS[2 + 2 * j], KEYS[3 + 2 * j]
  local spec = redis.call('HGET', KEYS[1], queue)
  local item = false
  if not spec then return redis.error_reply('NOT_FOUND ' .. queue) end
  if spec == 'fifo' then
    item = redis.call('RPOP', list)
  else
    local popped = redis.call('ZPOPMIN', zset)
    if #popped > 0 then
      item = popped[1]
      if redis.call('LLEN', list) > redis.call('ZCARD', zset) then redis.call('RPOP', list) end
    end
  end
  if item then
    local ok, message = pcall(cjson.decode, item)
    if ok and type(message) == 'table' and type(message.properties) == 'table'
        and type(message.properties.delivery_tag) == 'string' then
      local tag = message.properties.delivery_tag
      redis.call('HSET', KEYS[2], tag, '[' .. item .. ',"",' .. cjson.encode(queue) .. ']')
      redis.call('ZADD', KEYS[3], ARGV[1], tag)
      return {queue, item, tag}
    end
    return {queue, item}
  end
end
return false
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


def is_queue_not_found(exc: BaseException) -> bool:
    """Whether a Redis error (direct or from a pipeline) is a script's missing-queue reply."""
    return isinstance(exc, ResponseError) and str(exc).rsplit(": ", 1)[-1] == _NOT_FOUND


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

    def restore_unacked(self, client: Any = None) -> None:
        """Restore in reverse delivery order: each goes to the front, so the original order holds."""
        with self.channel.conn_or_acquire(client) as client:
            for tag in reversed(list(self._delivered)):
                self.restore_by_tag(tag, client=client)
        self._delivered.clear()


class Channel(ExactOrderChannelMixin, kombu_redis.Channel):  # type: ignore[misc]
    """Redis channel with exact queue order; unacked bookkeeping apart from a host Celery app's."""

    QoS = QoS
    unacked_key = "mindtrace.unacked"
    unacked_index_key = "mindtrace.unacked_index"
    unacked_mutex_key = "mindtrace.unacked_mutex"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scripts: dict[str, Script] = {}
        #: Delivery tags the pop script recorded as unacked and QoS has not tracked yet.
        self.recorded: set[str] = set()

    def _script(self, name: str, source: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(source)
        return script

    def _run(self, name: str, source: str, queue: str, *args: Any) -> Any:
        """Run one of the scripts above for ``queue``: one round trip; a missing queue raises 404."""
        try:
            return self._script(name, source)(keys=_keys(queue), args=[queue, *args], client=self.client)
        except ResponseError as exc:
            if is_queue_not_found(exc):
                raise queue_not_found(queue) from None
            raise

    def _store_spec(self, spec: QueueSpec) -> QueueSpec:
        return _decode_spec(spec.name, self._run("declare", _DECLARE, spec.name, _encode_spec(spec)))

    def queue_spec(self, queue: str) -> QueueSpec | None:
        raw = self.client.hget(SPECS_KEY, queue)
        return None if raw is None else _decode_spec(queue, raw)

    def queue_specs(self) -> list[QueueSpec]:
        return [_decode_spec(name.decode(), raw) for name, raw in self.client.hgetall(SPECS_KEY).items()]

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        priority = message["properties"].get("priority") or 0
        batch = kwargs.pop("_publish_batch", None)
        if batch is None:
            self._run("put", _PUT, queue, dumps(message), priority, 0)
            return
        # Kombu's Producer.batch(): the script call joins the batch pipeline, which loads the
        # script if Redis lacks it; a missing queue surfaces as BatchPublishError at flush.
        script = self._script("put", _PUT)
        batch.pipeline.scripts.add(script)
        batch.add("evalsha", script.sha, len(_keys(queue)), *_keys(queue), queue, dumps(message), priority, 0)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Get one message; unless ``no_ack``, popped and recorded as unacked in one script call
        (Kombu's version pops, then records in a second command)."""
        if no_ack:
            return super().basic_get(queue, no_ack=True, **kwargs)
        found = self._pop_record([queue])
        if found is None:
            return None
        message = self.Message(found[1], channel=self)
        self.qos.append(message, message.delivery_tag)
        return message

    def _pop_record(self, queues: list[str]) -> tuple[str, dict[str, Any]] | None:
        """One script call: the first message of ``queues``, recorded as unacked (raw bytes that
        are no Kombu message come back wrapped, unrecorded, to be dead-lettered)."""
        keys = [SPECS_KEY, self.unacked_key, self.unacked_index_key]
        for queue in queues:
            keys += [queue, ordered_key(queue)]
        try:
            found = self._script("pop_record", _POP_RECORD)(keys=keys, args=[time.time(), *queues], client=self.client)
        except ResponseError as exc:
            missing = str(exc).partition(f"{_NOT_FOUND} ")[2]
            if missing:
                raise queue_not_found(missing) from None
            raise
        if not found:
            return None
        queue, item, tag = (found + [None])[:3]
        if tag is None:
            return queue.decode(), unparseable_message(item, queue.decode(), self._next_delivery_tag())
        self.recorded.add(tag.decode())
        return queue.decode(), loads(item)

    def deliver_next(self) -> bool:
        """Pop one message of the consumed queues, recorded as unacked, and deliver it to its
        consumer. One round trip; False when every consumed queue is empty or prefetch is full."""
        queues = list(self._active_queues)
        if not queues or not self.qos.can_consume():
            return False
        found = self._pop_record(queues)
        if found is None:
            return False
        self._active_queues.append(self._active_queues.pop(0))  # round robin across queues
        queue, message = found
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
        script = self._script("put", _PUT)
        for queue in self._lookup(exchange, routing_key):
            script(keys=_keys(queue), args=[queue, dumps(payload), priority, 1], client=pipe)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        item = self._run("get", _GET, queue)
        if item is None:
            raise Empty()
        try:
            message = loads(item)
            message["properties"]["delivery_tag"]  # noqa: B018 - a Kombu message has one
        except (ValueError, TypeError, KeyError):
            return unparseable_message(item, queue, self._next_delivery_tag())
        return message  # type: ignore[no-any-return]

    def _size(self, queue: str) -> int:
        return int(self._run("size", _SIZE, queue))

    def _purge(self, queue: str) -> int:
        return int(self._run("purge", _PURGE, queue))

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._run("delete", _DELETE, queue)


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
        both (:meth:`Channel.deliver_next`). When every queue is empty, wait for a wake-up that
        every put publishes. Each sweep also restores the unacked messages of dead consumers
        whose visibility timeout has passed. Celery's event loop still uses Kombu's BRPOP path.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._restore_visible()
            if any(channel.deliver_next() for channel in list(self.channels)):
                return
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
