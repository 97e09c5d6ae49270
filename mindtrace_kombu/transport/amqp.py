"""RabbitMQ transport and the py-amqp adapter of the RabbitMQ backend.

This is the one module where Kombu's and py-amqp's private members appear.

* :class:`Transport` -- Kombu's py-amqp transport whose ``Producer.batch()`` sends the messages
  back to back and waits once, at flush, until the broker has confirmed every one of them (a
  ``basic.nack`` raises ``MessageNacked``; a mandatory message with no queue raises the broker's
  ``basic.return``; no confirm within the publishes' ``confirm_timeout`` raises
  ``socket.timeout``, as py-amqp does), instead of Kombu's wait after every message. Single
  publishes keep Kombu's behaviour. URL: an ordinary ``amqp://`` URL with
  ``transport=mindtrace_kombu.transport.amqp:Transport``.
* :class:`SessionChannel` -- the channel of a backend session, on this transport or Kombu's
  stock one (a Celery app's pool): bodies stay bytes, and :meth:`SessionChannel.publish` sends
  pre-encoded messages in confirm mode and awaits the confirms once per call (1 round trip),
  for at most ``confirm_timeout`` seconds (:class:`ConfirmTimeout`).
* :func:`read_pending` -- dispatch what the broker sent without waiting, and send a heartbeat
  when one is due.
* :func:`probe_queue_spec` -- which of several candidate specs an existing queue has, and the
  broker's reasons for refusing the others, in 1 round trip (AMQP cannot read a queue's
  arguments, only check them, see its docstring).
* :func:`connect` -- connect, trying every host of a failover URL once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any, NamedTuple

import amqp
import kombu
from amqp import spec
from amqp.exceptions import MessageNacked
from kombu.transport import pyamqp

from ..backends.base import Delivery, Settlement, WireMessage
from ..backends.wire import message_properties
from ..queues import QueueSpec

__all__ = [
    "Channel", "ConfirmTimeout", "Connection", "MessagesNacked", "Probed", "SessionChannel", "Transport",
    "connect", "delivery", "probe_queue_spec", "read_pending", "settle",
]

_CONFIRMS = [spec.Basic.Ack, spec.Basic.Nack]
_DECLARE_ARGS = "BsbbbbbF"  # ticket, queue, passive, durable, exclusive, auto_delete, nowait, arguments


class ConfirmTimeout(socket.timeout):
    """No publisher confirm for ``unconfirmed`` messages within ``waited`` seconds: they may or
    may not be on the queue. A ``socket.timeout``, as py-amqp's ``confirm_timeout`` raises."""

    def __init__(self, unconfirmed: int, waited: float) -> None:
        super().__init__(f"{unconfirmed} messages not confirmed within {waited:g}s")
        self.unconfirmed = unconfirmed
        self.waited = waited


class MessagesNacked(MessageNacked):  # type: ignore[misc]
    """The broker refused (``basic.nack``) ``refused`` of ``total`` messages; py-amqp's
    ``MessageNacked`` with the counts."""

    def __init__(self, refused: int, total: int) -> None:
        super().__init__(f"the broker refused {refused} of {total} messages")
        self.refused = refused
        self.total = total


def read_pending(connection: Any) -> None:
    """Dispatch every frame of a py-amqp ``connection`` that can be read without waiting
    (py-amqp may buffer part of one), then send a heartbeat if one is due. Raises
    ``ConnectionForced`` when the broker sent nothing for two heartbeat intervals. Reading
    first matters: frames (heartbeats too) buffered while nobody read are not missed ones.

    The socket is made non-blocking once for the whole loop: py-amqp's ``drain_events(timeout=0)``
    otherwise sets and restores the socket's timeout around every message (two system calls)."""
    sock: Any = getattr(connection.transport, "sock", None)
    previous = None if sock is None else sock.gettimeout()
    blocking = sock is not None and previous != 0
    if blocking:
        sock.settimeout(0)
    try:
        while True:
            try:
                connection.drain_events(timeout=0)
            except TimeoutError:
                break
    finally:
        if blocking:
            with suppress(OSError):  # closed meanwhile
                sock.settimeout(previous)
    connection.heartbeat_tick()


class _Confirms:
    """The publisher confirms of one channel in confirm mode: the broker numbers its publishes
    from 1 and acknowledges (or refuses) them, one by one or ``multiple`` up to a tag."""

    def __init__(self, channel: Any) -> None:
        self.reset()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)

    def reset(self) -> None:
        """A new or reopened channel: tags restart at 1."""
        self.published = 0
        self.unconfirmed: set[int] = set()
        self.nacked: set[int] = set()

    def sent(self) -> int:
        """Count one publish; returns its tag."""
        self.published += 1
        self.unconfirmed.add(self.published)
        return self.published

    def wait(self, channel: Any, tags: set[int], timeout: float | None = None) -> int:
        """Read frames until every one of ``tags`` is confirmed; returns how many were refused.
        Raises :class:`ConfirmTimeout` after ``timeout`` seconds (None: no deadline, but a read
        timeout of the connection's socket still ends the wait)."""
        started = time.monotonic()
        while tags & self.unconfirmed:
            remaining = None if timeout is None else started + timeout - time.monotonic()
            try:
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                channel.connection.drain_events(timeout=remaining)  # heartbeats do not extend the deadline
            except TimeoutError as exc:
                raise ConfirmTimeout(len(tags & self.unconfirmed), time.monotonic() - started) from exc
        refused = tags & self.nacked
        self.nacked -= refused
        return len(refused)

    def _settle(self, delivery_tag: int, multiple: bool) -> set[int]:
        settled = {tag for tag in self.unconfirmed if tag <= delivery_tag} if multiple else {delivery_tag}
        self.unconfirmed -= settled
        return settled

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked |= self._settle(delivery_tag, multiple)


class Channel(pyamqp.Channel):  # type: ignore[misc]
    """A py-amqp channel that numbers its confirmed publishes and tracks their confirms."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.confirms = _Confirms(self)

    def _do_revive(self) -> None:
        self.confirms.reset()  # py-amqp reopens a channel the broker closed (404, 406)
        super()._do_revive()

    def _basic_publish(self, *args: Any, **kwargs: Any) -> Any:
        if self._confirm_selected:
            self.confirms.sent()
        return super()._basic_publish(*args, **kwargs)

    def create_publish_batch(self, max_size: int) -> _ConfirmBatch:
        """Kombu's ``Producer.batch()`` hook."""
        return _ConfirmBatch(self, max_size)


class _ConfirmBatch:
    """Messages published without waiting; :meth:`flush` waits for all their confirms."""

    def __init__(self, channel: Channel, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self._tags: list[int] = []
        self._timeout: float | None = None  # the longest confirm_timeout of the pending publishes

    def publish(self, message: Any, **kwargs: Any) -> None:
        channel = self.channel
        timeout = kwargs.pop("confirm_timeout", None)
        if timeout is not None:
            self._timeout = max(self._timeout or 0.0, timeout)
        if not channel._confirm_selected:
            channel._confirm_selected = True
            channel.confirm_select()
        channel._basic_publish(message, **kwargs)
        self._tags.append(channel.confirms.published)
        if len(self._tags) >= self.max_size:
            self.flush()

    def flush(self) -> None:
        tags, self._tags, timeout, self._timeout = set(self._tags), [], self._timeout, None
        if refused := self.channel.confirms.wait(self.channel, tags, timeout):
            raise MessagesNacked(refused, len(tags))

    def discard(self) -> None:
        self._tags, self._timeout = [], None

    def close(self) -> None:
        self.discard()


class Connection(pyamqp.Connection):  # type: ignore[misc]
    Channel = Channel


class Transport(pyamqp.Transport):  # type: ignore[misc]
    """Kombu's py-amqp transport with batched publisher confirms."""

    Connection = Connection


# -- the backend's adapter -------------------------------------------------------------------------


def connect(connection: kombu.Connection) -> None:
    """Connect as Kombu's lazy connect does, except that every host of a failover URL
    (``amqp://h1;amqp://h2;amqp://h3``) is tried once, in order, without a pause between them
    (Kombu's tries two hosts at most). Raises the last attempt's error."""
    if not connection.connected:
        connection._ensure_connection(max_retries=max(1, len(connection.alt) - 1), reraise_as_library_errors=False)


class SessionChannel:
    """A py-amqp channel (:attr:`raw`) opened on a Kombu connection for a backend session.

    Bodies are not decoded (``auto_decode`` off), so messages pass through byte for byte.
    ``basic.return`` is recorded, not raised in the middle of whatever frame read meets it, and
    raised by the :meth:`publish` whose confirms it precedes. Works on this transport and on
    Kombu's stock py-amqp one, whatever the connection's ``confirm_publish`` option.
    """

    def __init__(self, connection: kombu.Connection) -> None:
        connect(connection)
        raw = connection.channel()
        raw.auto_decode = False
        raw.events["basic_return"].add(self._on_return)
        self.raw: Any = raw
        self._confirms = _Confirms(raw)
        self._returned: list[Exception] = []
        self._plain: Any = None  # a channel without confirms, for unconfirmed publishes

    @property
    def is_open(self) -> bool:
        """False once closed, by us or for good by the broker; py-amqp reopens a channel the
        broker closed with a channel error (404, 406) before it raises."""
        return bool(self.raw.is_open and self.raw.connection is not None)

    def publish(
        self, routing_key: str, messages: Sequence[WireMessage], priority: int | None,
        confirm_timeout: float | None = None, exchange: str = "", *, confirm: bool = True,
    ) -> None:
        """Publish ``messages`` in order through ``exchange`` ("": the default exchange), persistent and mandatory,
        then wait once until the broker confirmed all of them (1 round trip; +1 for
        ``confirm.select`` on a new channel). Raises the broker's ``basic.return`` (312
        NO_ROUTE: no such queue), :class:`MessagesNacked`, or after ``confirm_timeout``
        seconds :class:`ConfirmTimeout`; a prefix may have been published.

        Without ``confirm``: persistent, not mandatory, nothing awaited (Celery's
        ``send_task``), on a second channel that is not in confirm mode, so that no confirm
        or return is left for the next confirmed publish to read."""
        if not confirm:
            plain = self._plain_channel()
            for message in messages:  # basic.publish as py-amqp sends it, minus its per-message
                # non-blocking read for connection.blocked (a syscall and a caught timeout each)
                plain.send_method(spec.Basic.Publish, "Bssbb", (0, exchange, routing_key, False, False), _amqp_message(message, priority))
            return
        raw = self.raw
        if not raw._confirm_selected:  # a new channel, or one py-amqp reopened: tags restart at 1
            raw.confirm_select()
            raw._confirm_selected = True
            self._confirms.reset()
            self._returned.clear()
        tags = set()
        for message in messages:
            raw._basic_publish(
                _amqp_message(message, priority), exchange=exchange, routing_key=routing_key, mandatory=True
            )
            tags.add(self._confirms.sent())
        refused = self._confirms.wait(raw, tags, confirm_timeout)
        returned, self._returned = self._returned, []
        if returned:
            raise returned[0]
        if refused:
            raise MessagesNacked(refused, len(messages))

    def _plain_channel(self) -> Any:
        """The session's channel for unconfirmed publishes, opened on first use (1 round trip)."""
        if self._plain is None or not self._plain.is_open:
            self._plain = self.raw.connection.channel()
        return self._plain

    def close(self) -> None:
        """Close the channel (1 round trip); the broker requeues its unacknowledged messages."""
        if self.is_open:
            self.raw.close()

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(exc)


def _amqp_message(message: WireMessage, priority: int | None) -> amqp.Message:
    """The py-amqp message ``Producer.publish`` would build for ``message`` (persistent):
    same body bytes, content type, encoding, headers and properties (``expiration`` in
    seconds, as Kombu takes it)."""
    properties = dict(message.properties)
    if properties.get("expiration") is not None:
        properties["expiration"] = str(int(float(properties["expiration"]) * 1000))
    return amqp.Message(
        message.body, priority=priority or 0, content_type=message.content_type,
        content_encoding=message.content_encoding, application_headers=dict(message.headers),
        delivery_mode=2, **properties,
    )


def _wire_message(raw: Any) -> WireMessage:
    """The :class:`WireMessage` of a message received on a channel that does not decode bodies
    (inverse of :func:`_amqp_message`)."""
    properties: Mapping[str, Any] = raw.properties
    extra = message_properties(properties)
    if "expiration" in extra:
        extra["expiration"] = int(extra["expiration"]) / 1000
    return WireMessage(
        bytes(raw.body or b""), properties.get("content_type") or "application/data",  # "": no body frame
        properties.get("content_encoding") or "binary",
        dict(properties.get("application_headers") or {}), extra,
    )


def delivery(queue: str, raw: Any, settle: Callable[[Delivery, Settlement], None] | None) -> Delivery:
    """The :class:`Delivery` of a py-amqp message from ``basic.get`` or ``basic.deliver``;
    ``priority`` is the property as published (RabbitMQ orders by it capped, but keeps it)."""
    info = raw.delivery_info
    return Delivery(
        queue, _wire_message(raw), priority=raw.properties.get("priority"),
        redelivered=bool(info.get("redelivered")), tag=info["delivery_tag"], settle=settle,
    )


def settle(channel: Any, delivery_tag: int, how: Settlement) -> None:
    """``basic.ack``, ``basic.reject`` or ``basic.reject(requeue=True)``: one frame, no answer."""
    if how is Settlement.ACK:
        channel.basic_ack(delivery_tag)
    else:
        channel.basic_reject(delivery_tag, requeue=how is Settlement.REQUEUE)


# -- spec probing ----------------------------------------------------------------------------------


class _ProbeChannel(amqp.Channel):  # type: ignore[misc]
    """A channel that sends ``channel.open`` and ``queue.declare`` without waiting and records
    the answer: declare-ok, or the broker closing the channel (406) and why."""

    def __init__(self, connection: Any, candidate: QueueSpec, arguments: Mapping[str, Any]) -> None:
        super().__init__(connection, auto_decode=False)
        self.candidate = candidate
        self.arguments = arguments
        self.matched = False  # declare-ok: the queue has this spec
        self.refused: str | None = None  # the broker closed the channel: it has not, the reply text says why

    def _setup_listeners(self) -> None:
        super()._setup_listeners()
        self._callbacks[spec.Queue.DeclareOk] = self._on_declare_ok

    def send_probe(self) -> None:
        self.send_method(spec.Channel.Open, "s", ("",))
        self.send_method(
            spec.Queue.Declare, _DECLARE_ARGS, (0, self.candidate.name, False, True, False, False, False, self.arguments)
        )

    def send_close(self) -> None:
        """Close without waiting: the close-ok is read by the connection's next wait, which
        frees the channel id (:meth:`_on_close_ok`)."""
        self.send_method(spec.Channel.Close, "BsBB", (0, "", 0, 0))

    def _on_declare_ok(self, *args: Any) -> None:
        self.matched = True

    def _on_close(self, reply_code: int, reply_text: str, class_id: int, method_id: int) -> None:
        # The broker refused the candidate. Acknowledge and free the id (py-amqp would reopen
        # the channel and raise). Never close such a channel ourselves: RabbitMQ does not
        # always answer a close that crosses its own.
        self.refused = str(reply_text)
        self.send_method(spec.Channel.CloseOk)
        self.collect()


class Probed(NamedTuple):
    """What :func:`probe_queue_spec` found: the matching candidate, else None, and the broker's
    reply text for each candidate it refused (``inequivalent arg 'x-max-length' ...``)."""

    match: QueueSpec | None
    refusals: dict[QueueSpec, str]


def probe_queue_spec(
    connection: kombu.Connection, candidates: Sequence[QueueSpec | tuple[QueueSpec, Mapping[str, Any]]],
    *, timeout: float | None = None,
) -> Probed:
    """Which candidate an existing queue was declared with, and why the others were refused.

    AMQP has no command that reads a queue's arguments, but RabbitMQ accepts a declare that
    matches the queue and refuses any other with 406, which closes the channel. So each
    candidate gets a fresh channel: every channel's ``channel.open`` and ``queue.declare``
    (durable, the candidate's arguments) are sent at once, then all the answers read -- one
    round trip for up to ``channel_max`` candidates. The refused channels are closed by the
    broker; the one that matched is closed without waiting. The caller must know that the
    queue exists (a passive declare): a declare of a missing queue would create it.

    Args:
        connection: an open connection; its other channels are not touched.
        candidates: specs of one queue name, declared with their own :meth:`QueueSpec.arguments`,
            or ``(spec, arguments)`` pairs to declare with other arguments.
        timeout: seconds to wait for each answer (``socket.timeout`` after that).
    """
    raw = connection.connection
    room = max(1, raw.channel_max - len(raw._used_channel_ids))
    pairs = [(c, c.arguments()) if isinstance(c, QueueSpec) else c for c in candidates]
    refusals: dict[QueueSpec, str] = {}
    for start in range(0, len(pairs), room):
        probes = [_ProbeChannel(raw, candidate, arguments) for candidate, arguments in pairs[start : start + room]]
        for probe in probes:
            probe.send_probe()
        while not all(probe.matched or probe.refused is not None for probe in probes):
            raw.drain_events(timeout=timeout)
        refusals.update((probe.candidate, probe.refused) for probe in probes if probe.refused is not None)
        for probe in probes:
            if probe.matched:
                probe.send_close()
                return Probed(probe.candidate, refusals)
    return Probed(None, refusals)
