"""RabbitMQ transport: Kombu's py-amqp transport with publisher confirms awaited per batch.

Kombu's ``confirm_publish`` waits for the broker's confirm after every message. Inside
``Producer.batch()`` this transport sends the messages back to back and waits once, at flush,
until the broker has confirmed every one of them (a ``basic.nack`` raises
``MessageNacked``; a mandatory message with no queue raises the broker's ``basic.return``):
the same guarantee for a batch, for one confirm wait instead of one per message.
Single publishes keep Kombu's behaviour.

Connection string: an ordinary ``amqp://`` URL with ``transport=mindtrace_kombu.transport.amqp:Transport``.
"""

from __future__ import annotations

from typing import Any

from amqp import spec
from amqp.exceptions import MessageNacked
from kombu.transport import pyamqp

__all__ = ["Channel", "Connection", "Transport"]

_CONFIRMS = [spec.Basic.Ack, spec.Basic.Nack]


class Channel(pyamqp.Channel):  # type: ignore[misc]
    """A py-amqp channel that numbers its confirmed publishes and tracks their confirms."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published = 0  # broker-side delivery tag of the last publish in confirm mode
        self.unconfirmed: set[int] = set()
        self.nacked: set[int] = set()
        self.events["basic_ack"].add(self._confirmed)
        self.events["basic_nack"].add(self._refused)

    def _basic_publish(self, *args: Any, **kwargs: Any) -> Any:
        if self._confirm_selected:
            self.published += 1
            self.unconfirmed.add(self.published)
        return super()._basic_publish(*args, **kwargs)

    def _settled(self, delivery_tag: int, multiple: bool) -> set[int]:
        settled = {tag for tag in self.unconfirmed if tag <= delivery_tag} if multiple else {delivery_tag}
        self.unconfirmed -= settled
        return settled

    def _confirmed(self, delivery_tag: int, multiple: bool) -> None:
        self._settled(delivery_tag, multiple)

    def _refused(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked |= self._settled(delivery_tag, multiple)

    def create_publish_batch(self, max_size: int) -> _ConfirmBatch:
        """Kombu's ``Producer.batch()`` hook."""
        return _ConfirmBatch(self, max_size)


class _ConfirmBatch:
    """Messages published without waiting; :meth:`flush` waits for all their confirms."""

    def __init__(self, channel: Channel, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self._tags: list[int] = []

    def publish(self, message: Any, **kwargs: Any) -> None:
        channel = self.channel
        kwargs.pop("confirm_timeout", None)
        if not channel._confirm_selected:
            channel._confirm_selected = True
            channel.confirm_select()
        channel._basic_publish(message, **kwargs)
        self._tags.append(channel.published)
        if len(self._tags) >= self.max_size:
            self.flush()

    def flush(self) -> None:
        tags, self._tags = set(self._tags), []
        channel = self.channel
        while tags & channel.unconfirmed:
            channel.wait(_CONFIRMS)
        if refused := tags & channel.nacked:
            channel.nacked -= refused
            raise MessageNacked(f"the broker refused {len(refused)} of {len(tags)} messages")

    def discard(self) -> None:
        self._tags = []

    def close(self) -> None:
        self.discard()


class Connection(pyamqp.Connection):  # type: ignore[misc]
    Channel = Channel


class Transport(pyamqp.Transport):  # type: ignore[misc]
    """Kombu's py-amqp transport with batched publisher confirms."""

    Connection = Connection
