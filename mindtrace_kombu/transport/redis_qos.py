"""Acknowledgements and publish batches of the ``mindtrace-redis`` channel
(:mod:`mindtrace_kombu.transport.redis`)."""

from __future__ import annotations

from typing import Any

from amqp.exceptions import NotFound
from kombu.exceptions import BatchPublishError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

__all__ = ["IN_FLIGHT", "PublishBatch", "QoS"]

#: Key of a delivered payload holding ``(queue, lease id, in-flight member)``: how any channel
#: of the connection settles it (Kombu ignores keys it does not know).
IN_FLIGHT = "mindtrace-in-flight"


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """Kombu's prefetch accounting over leases: no unacked hash, no visibility timeout.

    A delivered message stays in flight in the store under the lease of the channel that took
    it, renewed by the lease's heartbeat while that channel lives; settlements go to the store
    at once, one script call each.
    """

    def append(self, message: Any, delivery_tag: str) -> None:
        """Count the delivery against prefetch. Replaces Kombu's, which also records the message
        in the unacked hash and index: the store already holds it in flight."""
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """Settle the message as done; it leaves the store (and counts as processed in the
        worker registry)."""
        self._settle(delivery_tag, requeue=False)
        virtual.QoS.ack(self, delivery_tag)
        self.channel.announcer.acknowledged += 1

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Drop the message, or with ``requeue`` put it back first in line. Replaces Kombu's,
        which restores it through the unacked hash."""
        self._settle(delivery_tag, requeue)
        virtual.QoS.ack(self, delivery_tag)

    def restore_unacked(self, client: Any = None) -> None:
        """Put every unacknowledged message back, first in line in its original order: one
        call per queue. Replaces Kombu's restore through the unacked hash."""
        self._flush()
        held: dict[tuple[str, str], list[str]] = {}
        for message in self._delivered.values():
            if IN_FLIGHT in message._raw:
                queue, lease, member = message._raw[IN_FLIGHT]
                held.setdefault((queue, lease), []).append(member)
        self._delivered.clear()
        for (queue, lease), members in held.items():
            self.channel.settle(queue, lease, requeues=members)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: there is no visibility timeout. Replaces Kombu's sweep of the unacked
        index; a dead channel's messages return once its lease expires (released by any take,
        heartbeat or count on their queue)."""

    def _settle(self, delivery_tag: str, requeue: bool) -> None:
        message = self._delivered.get(delivery_tag)
        if message is not None and IN_FLIGHT in message._raw:
            queue, lease, member = message._raw[IN_FLIGHT]
            if requeue:
                self.channel.settle(queue, lease, requeues=[member])
            else:
                self.channel.settle(queue, lease, acks=[member])


class PublishBatch:
    """A ``Producer.batch()`` session: at flush, each queue's messages are put with one script
    call and fanout messages published in one pipeline (Kombu's sends a pipeline of one command
    per message). A flush that fails leaves the batch unusable, as Kombu's does."""

    def __init__(self, channel: Any, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self._puts: dict[tuple[str, str | None], list[tuple[str, Any]]] = {}
        self._commands: list[tuple[str, tuple[Any, ...]]] = []
        self._size = 0
        self._ended: str | None = None  # "closed" or "aborted"
        self._failed: BaseException | None = None

    def publish(self, message: dict[str, Any], **kwargs: Any) -> Any:
        """Route one message and buffer it; flush when ``max_size`` messages are buffered."""
        self._check_usable()
        result = self.channel.basic_publish(message, _publish_batch=self, **kwargs)
        if self._size >= self.max_size:
            self.flush()
        return result

    def add_put(self, queue: str, exchange: str | None, item: tuple[str, Any]) -> None:
        self._puts.setdefault((queue, exchange), []).append(item)
        self._size += 1

    def add(self, command: str, *args: Any) -> None:
        """Kombu's hook for a Redis command of a routed message (its fanout ``publish``)."""
        self._commands.append((command, args))
        self._size += 1

    def flush(self) -> None:
        """Put and publish what is buffered. A missing queue behind the default exchange raises
        404; any other failure raises ``BatchPublishError`` (delivery uncertain)."""
        self._check_usable()
        puts, commands = self._puts, self._commands
        self._puts, self._commands, self._size = {}, [], 0
        try:
            for (queue, exchange), items in puts.items():
                self.channel.put_items(queue, exchange, items)
            if commands:
                with self.channel.store.client.pipeline(transaction=False) as pipe:
                    for command, args in commands:
                        getattr(pipe, command)(*args)
                    pipe.execute()
        except Exception as exc:
            self._failed = exc
            if isinstance(exc, NotFound):
                raise
            raise BatchPublishError("Redis publish batch failed; delivery is uncertain") from exc

    def discard(self) -> None:
        """Forget what is buffered; the batch can no longer be used."""
        self._ended, self._puts, self._commands, self._size = "aborted", {}, [], 0

    def close(self) -> None:
        self._ended, self._puts, self._commands, self._size = "closed", {}, [], 0

    def _check_usable(self) -> None:
        if self._ended:
            raise RuntimeError(f"Redis publish batch is {self._ended}")
        if self._failed is not None:
            raise BatchPublishError("Redis publish batch cannot be reused after a failure") from self._failed
