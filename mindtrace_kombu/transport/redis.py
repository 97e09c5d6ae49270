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
===============================  ======  ==================================================

Scores: stack ``-seq``; priority ``(255 - priority) * 2**44 + seq`` (exact in a double for 2**44
publishes). Each primitive is one Lua script, so one round trip and atomic: declare (plus one
size read), publish, get, size, purge and delete.
"""

from __future__ import annotations

from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps, loads
from redis.commands.core import Script
from redis.exceptions import ResponseError

from ..queues import QueueSpec, QueueType
from .base import ExactOrderChannelMixin, queue_not_found, unparseable_message

__all__ = ["Channel", "Transport", "SPECS_KEY", "is_queue_not_found", "ordered_key"]

SPECS_KEY = "mindtrace.queues"
SEQ_KEY = "mindtrace.seq"
_NOT_FOUND = "NOT_FOUND"

# KEYS: specs, list, zset, seq    ARGV: queue, message, priority
_PUT = """
local spec = redis.call('HGET', KEYS[1], ARGV[1])
if not spec then return redis.error_reply('NOT_FOUND') end
if spec == 'fifo' then return redis.call('LPUSH', KEYS[2], ARGV[2]) end
local seq = redis.call('INCR', KEYS[4])
local score = -seq
if spec ~= 'stack' then score = (255 - tonumber(ARGV[3])) * 17592186044416 + seq end
redis.call('ZADD', KEYS[3], score, ARGV[2])
return redis.call('LPUSH', KEYS[2], '1')
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
    return spec.queue_type.value


def _decode_spec(queue: str, raw: bytes | str) -> QueueSpec:
    text = raw.decode() if isinstance(raw, bytes) else raw
    kind, _, max_priority = text.partition(":")
    return QueueSpec(queue, QueueType(kind), int(max_priority) if max_priority else None)


class Channel(ExactOrderChannelMixin, kombu_redis.Channel):  # type: ignore[misc]
    """Redis channel with exact queue order; unacked bookkeeping apart from a host Celery app's."""

    unacked_key = "mindtrace.unacked"
    unacked_index_key = "mindtrace.unacked_index"
    unacked_mutex_key = "mindtrace.unacked_mutex"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scripts: dict[str, Script] = {}

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
            self._run("put", _PUT, queue, dumps(message), priority)
            return
        # Kombu's Producer.batch(): the script call joins the batch pipeline, which loads the
        # script if Redis lacks it; a missing queue surfaces as BatchPublishError at flush.
        script = self._script("put", _PUT)
        batch.pipeline.scripts.add(script)
        batch.add("evalsha", script.sha, len(_keys(queue)), *_keys(queue), queue, dumps(message), priority)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        item = self._run("get", _GET, queue)
        if item is None:
            raise Empty()
        try:
            message = loads(item)
            message["properties"]["delivery_tag"]  # noqa: B018 - a Kombu message has one
        except (ValueError, TypeError, KeyError):
            return unparseable_message(item, self._next_delivery_tag())
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

    def _deliver(self, message: Any, queue: str) -> None:
        """Deliver what Kombu's BRPOP loop popped.

        For a stack or priority queue that is a wake-up token, not a message: swap it for the
        queue's best message (one script call) before handing it to the consumer callback.
        """
        if not isinstance(message, dict):
            message = self.channels[0]._get(queue)  # raises Empty if another consumer won
        super()._deliver(message, queue)
