"""Kombu transport ``mindtrace-memory``: a thin adapter over the in-process broker of
:mod:`mindtrace_kombu.backends.memory`.

Connection string ``memory:///<broker_id>`` with ``transport="mindtrace-memory"`` (or
``mindtrace-memory:///<broker_id>``): the virtual host names the broker, so Kombu and Celery
producers and consumers on it and a ``MemoryBackend(broker_id)`` share queues and messages.

What lives where:

* queues, messages, their order and the messages in flight: the shared :class:`Broker`. A put
  stores the Kombu payload as a :class:`~mindtrace_kombu.backends.base.WireMessage` (body bytes,
  content type and encoding, headers, AMQP properties) plus priority, exchange and routing key; a
  get builds Kombu's payload again (:func:`~mindtrace_kombu.backends.wire.encode_payload`) with a
  fresh delivery tag, ``delivery_info["redelivered"]`` set as py-amqp does.
* exchanges and bindings: one Kombu ``BrokerState`` per broker id, shared by its connections.
* acknowledgements: :class:`QoS` settles through the broker at once, so a rejected (requeue) or
  restored message goes first in line, and several keep their original order.

Kombu's stock memory transport, except where RabbitMQ does better:

* exact fifo, stack (argument ``x-mindtrace-queue-type: stack``) and priority order
  (``x-max-priority``, also from ``Queue(max_priority=N)``; a higher priority ranks as the max);
* re-declaring with another spec raises py-amqp's ``PreconditionFailed`` (406); primitives on an
  undeclared queue raise its ``NotFound`` (404); a publish through an exchange skips a bound
  queue that was deleted;
* ``queue_delete`` deletes by name (a missing queue is ignored); with ``if_empty`` it keeps a
  queue holding ready or unacknowledged messages;
* a closed channel returns its unacknowledged messages;
* ``drain_events`` sleeps on the broker's condition until a put or a settlement, not on a timer.
"""

from __future__ import annotations

import socket
import threading
import time
from queue import Empty
from typing import Any

from kombu.transport import memory, virtual
from kombu.transport.base import to_rabbitmq_queue_arguments

from ..backends.base import Settlement, WireMessage
from ..backends.memory import Broker, Stored, broker_for
from ..backends.wire import encode_payload
from ..errors import QueueNotFound
from ..queues import QueueSpec
from .base import ExactOrderChannelMixin, not_found_as_404, queue_not_found

__all__ = ["Channel", "QoS", "Transport"]

#: Payload properties the transport sets itself; the others travel with the message.
_TRANSPORT_PROPERTIES = frozenset(
    {"body_encoding", "delivery_info", "delivery_mode", "delivery_tag", "priority"},
)

_states: dict[str, virtual.BrokerState] = {}
_states_lock = threading.Lock()


def _state_for(broker_id: str) -> virtual.BrokerState:
    """Exchanges and bindings of ``broker_id``, shared by its connections."""
    with _states_lock:
        return _states.setdefault(broker_id, virtual.BrokerState())



class QoS(virtual.QoS):  # type: ignore[misc]
    """Kombu's prefetch accounting; acks and rejects settle on the broker at once. The
    accounting is updated first, so a consumer woken by the settlement may consume again."""

    def __init__(self, channel: Channel, prefetch_count: int = 0) -> None:
        super().__init__(channel, prefetch_count)
        self._broker = channel.broker

    def ack(self, delivery_tag: str) -> None:
        super().ack(delivery_tag)
        self._broker.settle(delivery_tag, Settlement.ACK)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Drop it, or put it back first in line (Kombu's own reject re-publishes it last)."""
        super().ack(delivery_tag)  # forgotten by the prefetch accounting
        self._broker.settle(delivery_tag, Settlement.REQUEUE if requeue else Settlement.REJECT)

    def restore_unacked(self) -> list[Any]:
        """Put every unacknowledged message back, first in line in its original order."""
        self._flush()
        for delivery_tag in list(self._delivered):
            self._broker.settle(delivery_tag, Settlement.REQUEUE)
        self._delivered.clear()
        return []


class Channel(ExactOrderChannelMixin, virtual.Channel):  # type: ignore[misc]
    """A Kombu virtual channel whose primitives are the broker's."""

    QoS = QoS
    supports_fanout = True  # bindings live in the shared BrokerState
    body_encoding = None  # the body reaches _put as the producer made it: no base64 round trip

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self.broker: Broker = connection.broker
        super().__init__(connection, **kwargs)

    def prepare_queue_arguments(self, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """``Queue(max_priority=N)`` and friends as AMQP arguments, as py-amqp sends them."""
        prepared: dict[str, Any] = to_rabbitmq_queue_arguments(arguments, **kwargs)
        return prepared

    def _store_spec(self, spec: QueueSpec) -> QueueSpec:
        return self.broker.declare(spec)

    def queue_spec(self, queue: str) -> QueueSpec | None:
        return self.broker.lookup(queue)

    def _delete(self, queue: str, *args: Any, if_empty: bool = False, **kwargs: Any) -> None:
        self.broker.delete(queue, if_empty=if_empty)

    def _forget_bindings(self, queue: str) -> None:
        super()._forget_bindings(queue)
        for exchange in self.state.exchanges.values():  # Kombu leaves the routing tables
            exchange["table"][:] = [meta for meta in exchange["table"] if meta[2] != queue]

    def after_reply_message_received(self, queue: str) -> None:
        """Keep reply queues, as Kombu's memory transport does."""

    def _queue_bind(self, *args: Any) -> None:
        """Nothing to do: the routing table is in the shared BrokerState."""

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        info = message["properties"].get("delivery_info") or {}
        exchange = info.get("exchange") or ""
        wire, priority = self._wire(message)
        try:
            self.broker.put(queue, [wire], priority, exchange, info.get("routing_key"))
        except QueueNotFound:
            if not exchange:  # the default exchange: the mandatory publish of this package
                raise queue_not_found(queue) from None

    def _put_fanout(
        self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any,
    ) -> None:
        for queue in self._lookup(exchange, routing_key):
            self._put(queue, message)

    def _wire(self, payload: dict[str, Any]) -> tuple[WireMessage, int]:
        """The message in a Kombu payload handed to ``_put``, and its priority."""
        properties = payload["properties"]
        body = self.decode_body(payload.get("body"), properties.get("body_encoding")) or b""
        encoding = payload.get("content-encoding") or "binary"
        if isinstance(body, str):
            body = body.encode("utf-8" if encoding == "binary" else encoding)
        extra = {key: val for key, val in properties.items() if key not in _TRANSPORT_PROPERTIES}
        message = WireMessage(
            body, payload.get("content-type") or "application/data", encoding,
            dict(payload.get("headers") or {}), extra,
        )
        return message, int(properties.get("priority") or 0)

    def _take(self, queue: str, ack: bool) -> dict[str, Any]:
        """The next message of ``queue`` as a Kombu payload, in flight when ``ack``; raises
        ``Empty``."""
        with not_found_as_404(queue):
            found = self.broker.take(queue, ack=ack)
        if found is None:
            raise Empty()
        tag, stored = found
        return _payload(tag, stored)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        return self._take(queue, ack=queue not in self._no_ack_queues)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """The next message or None; without ``no_ack`` it is in flight until settled."""
        try:
            message = self.Message(self._take(queue, ack=not no_ack), channel=self)
        except Empty:
            return None
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Consume an existing ``queue`` (404 otherwise)."""
        if not self._has_queue(queue):
            raise queue_not_found(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _size(self, queue: str) -> int:
        with not_found_as_404(queue):
            return self.broker.count(queue)

    def _purge(self, queue: str) -> int:
        with not_found_as_404(queue):
            return self.broker.purge(queue)


def _payload(tag: str, stored: Stored) -> dict[str, Any]:
    """Kombu's payload of a stored message delivered under ``tag``."""
    message = stored.message
    payload = encode_payload(message, stored.exchange, stored.routing_key, stored.priority, tag)
    payload["properties"]["delivery_info"]["redelivered"] = stored.redelivered
    return payload


class Transport(memory.Transport):  # type: ignore[misc]
    """In-process transport; the virtual host names the broker."""

    Channel = Channel
    driver_name = "mindtrace-memory"

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        broker_id = client.virtual_host or "/"
        self.broker = broker_for(broker_id)
        self.state = _state_for(broker_id)

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver one message to a consumer; between attempts, sleep on the broker's
        condition until a put or a settlement (which may free prefetch), not on a timer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.broker.condition:
                version = self.broker.version
            try:
                self.cycle.get(self._deliver, timeout=0)
                return
            except Empty:
                pass
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise socket.timeout()
            self.broker.wait(version, remaining)
