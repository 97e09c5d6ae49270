"""The RabbitMQ backend: :class:`AmqpBackend` and its :class:`AmqpConsumer`.

Queues are durable; messages are persistent, published to the default exchange with
``mandatory`` and publisher confirms, so a publish to a missing queue comes back as
``basic.return`` 312 (``QueueNotFound``). RabbitMQ caps a priority at the queue's
``x-max-priority`` itself. Operations run on pooled sessions (:mod:`.sessions`); py-amqp
specifics live in :mod:`mindtrace_kombu.transport.amqp`.

Round trips per operation, on a session whose connection and channel are open:

================  ==============================================================================
declare           1 ``queue.declare``; when the queue exists with another spec: + ``lookup``
lookup            management API: 1 HTTP GET. Else a passive declare, then candidate specs
                  probed in two waves of one round trip each
                  (:func:`~mindtrace_kombu.transport.amqp.probe_queue_spec`): fifo, quorum and
                  max_priority 10 and 255 (2 in all), then 1..254 at once, or an argument of
                  the queue's own with each queue type (3 in all). A missing queue: 2 (the 404,
                  and py-amqp reopening the channel it closed)
list_specs        management API: 1 HTTP GET; else one ``lookup`` per candidate
count, purge      1 passive ``queue.declare`` / ``queue.purge``
delete            2: passive declare (``queue.delete`` never answers 404), ``queue.delete``
publish (n)       1: n ``basic.publish``, one wait for all confirms, at most ``confirm_timeout``
                  (+1 ``confirm.select`` on a new channel). Unconfirmed (:meth:`unconfirmed`):
                  none -- n ``basic.publish`` written to the socket, on a second channel of the
                  session that is not in confirm mode (+1 ``channel.open`` on first use)
get               1 ``basic.get``; settling costs no wait (``basic.ack``/``reject`` have no answer)
consumer          on its own connection: ``basic.qos`` + one ``basic.consume`` per queue; a
                  quorum queue or stream refuses the channel-wide prefetch (540, closing the
                  connection): the same again on a new connection, with a prefetch per queue.
                  ``set_prefetch`` 1 ``basic.qos``; per queue, + ``basic.cancel`` and
                  ``basic.consume`` per queue
fetch             none: deliveries are pushed; it waits on the socket without polling
unacked_counts    management API: 1 HTTP GET; else None (AMQP does not report them)
declare_exchange  1 ``exchange.declare``; ``exchange_exists`` 1 passive one
bind              2: passive ``queue.declare`` (a 404 after it is the exchange's), ``queue.bind``
delete_exchange   2: passive ``exchange.declare`` (``exchange.delete`` never answers 404), delete
================  ==============================================================================

Heartbeats (the connections' negotiated interval, 0: off): sessions nobody uses are kept alive
by the pool (:mod:`.sessions`); a consumer's connection by :meth:`AmqpConsumer.fetch` while it
waits and by a daemon thread while it does not (a handler running on the consuming thread), so
a silent connection raises ``BrokerUnavailable`` (reason ``heartbeat``) within about 2.5
intervals, and a long job does not cost the connection.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import logging
import re
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import amqp.exceptions
import kombu

from ..errors import (
    BrokerUnavailable,
    ExchangeNotFound,
    JobsError,
    QueueNotEmpty,
    QueueNotFound,
    QueueTypeMismatch,
)
from ..queues import (
    DEFAULT_MAX_PRIORITY,
    MAX_PRIORITY_LIMIT,
    PRIORITY_ARGUMENT,
    QUEUE_TYPE_ARGUMENT,
    QueueSpec,
    QueueType,
)
from ..transport.amqp import (
    SessionChannel,
    connect,
    delivery,
    probe_queue_spec,
    read_pending,
    settle,
)
from .base import Delivery, Settlement, WireMessage, WithoutRegistry
from .errors import translate_errors
from .sessions import KombuSession, SessionPool

__all__ = ["AmqpBackend", "AmqpConsumer"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Session = KombuSession[SessionChannel]
_MANAGEMENT_RETRY = 60.0  # seconds before a management API that did not answer is asked again
#: Probed first: a wave of 4 channels costs the broker ~1 ms, all 256 candidates ~75 ms
_LIKELY_PRIORITIES = (DEFAULT_MAX_PRIORITY, MAX_PRIORITY_LIMIT)
_NOT_IMPLEMENTED = 540  # AMQP reply code: closes the connection
#: RabbitMQ's queue types besides classic, probed with an argument of a queue's own
_FOREIGN_PROBES = ("quorum", "stream")
#: A 406 refusal of a declare that lacks an argument the queue has, and the queue's value
_CURRENT_VALUE = re.compile(
    r"inequivalent arg '(?P<argument>[^']+)' .*: received none but current is the value '(?P<value>.*)' of type '(?P<type>\w+)'$"
)
#: The AMQP table types a refusal may name, read back into what py-amqp sends for them
_ARGUMENT_TYPES: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(("longstr", "shortstr"), str),
    **dict.fromkeys(("signedint", "long", "short", "byte", "unsignedbyte", "unsignedshort", "unsignedint"), int),
    **dict.fromkeys(("double", "float"), float),
    "bool": lambda text: text == "true",
}


@contextmanager
def _exchange_not_found(exchange: str, *, unless_returned: bool = False) -> Iterator[None]:
    """The 404 of an operation on ``exchange`` as :class:`ExchangeNotFound` (a publish's 312
    return, no queue bound for its key, stays ``QueueNotFound`` with ``unless_returned``)."""
    try:
        yield
    except QueueNotFound as exc:
        cause = exc.__cause__
        if unless_returned and isinstance(cause, amqp.exceptions.AMQPError) and cause.reply_code == 312:
            raise
        raise ExchangeNotFound(exchange) from cause


def _refused_argument(refusal: str) -> tuple[str | None, Any]:
    """The argument a 406 refusal of a declare without it names, and the queue's value of it
    (``inequivalent arg 'x-max-length' ...: received none but current is the value '10' of type
    'signedint'`` -> ``("x-max-length", 10)``); ``(None, None)`` for anything else."""
    found = _CURRENT_VALUE.search(refusal)
    if found is None or found["type"] not in _ARGUMENT_TYPES:
        return None, None
    return found["argument"], _ARGUMENT_TYPES[found["type"]](found["value"])


def _refuses_global_qos(error: BrokerUnavailable) -> bool:
    """Whether ``error`` is RabbitMQ's 540 for a channel-wide prefetch on a quorum queue or a
    stream (``queue 'q' in vhost '/' does not support global qos``)."""
    cause = error.__cause__
    return isinstance(cause, amqp.exceptions.AMQPError) and cause.reply_code == _NOT_IMPLEMENTED and (
        "global qos" in str(cause.reply_text)
    )


def _typed_spec(name: str, queue_type: str, foreign: str | None) -> QueueSpec:
    """The spec of a queue RabbitMQ holds with ``x-queue-type: queue_type`` and, unless None, an
    argument of its own: quorum is replicated, other types (stream) are foreign."""
    if queue_type == "quorum":
        return QueueSpec(name, replicated=True, foreign=foreign)
    return QueueSpec(name, foreign=foreign if queue_type == "classic" else queue_type)


def _reported_spec(queue: Mapping[str, Any]) -> QueueSpec:
    """The spec of a queue as the management API reports it: its type and arguments, compared
    with what this package declares (the first other argument is ``foreign``)."""
    name, arguments = queue["name"], dict(queue.get("arguments") or {})
    kind = str(arguments.pop(QUEUE_TYPE_ARGUMENT, None) or queue.get("type") or "classic")
    if PRIORITY_ARGUMENT in arguments and kind == "classic":
        spec = QueueSpec(name, QueueType.PRIORITY, int(arguments[PRIORITY_ARGUMENT]))
    else:
        spec = _typed_spec(name, kind, None)
    expected = {key: value for key, value in spec.arguments().items() if key != QUEUE_TYPE_ARGUMENT}
    other = next((key for key in sorted({*arguments, *expected}) if arguments.get(key) != expected.get(key)), None)
    return spec if other is None or spec.foreign is not None else dataclasses.replace(spec, foreign=other)


class AmqpBackend(WithoutRegistry):
    """RabbitMQ behind the :class:`~.base.Backend` seam; thread-safe.

    Args:
        connection_factory: a new, not yet connected Kombu connection on py-amqp (this
            package's transport or Kombu's stock one, e.g. a Celery app's pool).
        url: the broker URL with its password masked, for errors.
        management_port: port of the management HTTP API, asked first for specs and counts.
        connect_timeout: seconds for management requests and for each answer of a spec probe.
        max_idle: idle sessions (connections) kept for reuse.
        confirm_timeout: seconds a publish waits for its confirms (None: no limit) before
            ``PublishNotConfirmed``.
        heartbeat: the connections' heartbeat interval in seconds (0: none); idle sessions
            are visited every half interval.
    """

    backend_name = "RabbitMQ"

    def __init__(
        self,
        connection_factory: Callable[[], kombu.Connection],
        *,
        url: str,
        management_port: int = 15672,
        connect_timeout: float = 5.0,
        max_idle: int = 4,
        confirm_timeout: float | None = 30.0,
        heartbeat: float = 0.0,
    ) -> None:
        self._factory = connection_factory
        self._url = url
        self._management_port = management_port
        self._connect_timeout = connect_timeout
        self._confirm_timeout = confirm_timeout
        self._pool: SessionPool[_Session] = SessionPool(
            lambda: KombuSession(connection_factory(), SessionChannel), max_idle=max_idle,
            keepalive=heartbeat / 2 if heartbeat else None,
        )
        self._consumers: set[AmqpConsumer] = set()
        self._consumers_lock = threading.Lock()
        self._management: tuple[str, str, str] | None = None  # root URL, vhost, Authorization
        self._management_down_until = 0.0
        self._confirm = True
        self._unconfirmed: AmqpBackend | None = None

    def __repr__(self) -> str:
        return f"AmqpBackend({self._url!r})"

    # -- sessions ----------------------------------------------------------------------------------

    def _on(self, session: _Session, queue: str, operation: Callable[[_Session], _T]) -> _T:
        """Run ``operation`` on ``session`` with errors translated; a broken connection
        discards the session. A channel the broker closed (404, 406) py-amqp has reopened."""
        with session.lock:
            try:
                with translate_errors(self._url, queue):
                    if session.error is not None:  # found broken by a heartbeat
                        raise session.error
                    return operation(session)
            except BrokerUnavailable:
                self._pool.discard(session)
                raise

    def _run(self, queue: str, operation: Callable[[_Session], _T]) -> _T:
        with self._pool.session() as session:
            return self._on(session, queue, operation)

    # -- queues --------------------------------------------------------------------------------------

    def declare(self, spec: QueueSpec) -> QueueSpec:
        """Create the queue (durable) unless it exists; return the spec the broker holds."""
        for _ in range(2):  # the queue may be deleted between a refusal and the lookup
            try:
                self._run(spec.name, lambda session: session.channel.raw.queue_declare(
                    spec.name, durable=True, auto_delete=False, arguments=spec.arguments()
                ))
                return spec
            except QueueTypeMismatch:
                existing = self.lookup(spec.name)
                if existing is not None:
                    return existing
        raise QueueTypeMismatch(spec.name, "another type", spec.describe())

    def lookup(self, name: str) -> QueueSpec | None:
        """The existing queue's spec, or None. Without the management API, AMQP probes (see
        :meth:`_probe`): a queue declared elsewhere gets the ``foreign`` type or argument the
        broker's refusals name; one that matches nothing and names no argument (e.g. not
        durable) is taken as fifo."""
        answered, queue = self._management_get(f"/api/queues/{{vhost}}/{quote(name, safe='')}")
        if answered:
            return None if queue is None else _reported_spec(queue)
        try:
            return self._run(name, partial(self._probe, name))
        except QueueNotFound:
            return None

    def _probe(self, name: str, session: _Session) -> QueueSpec:
        """A passive declare (404: no queue), then equivalence-checking declares in pipelined
        waves, one round trip each: fifo, quorum and max_priority 10 and 255; then either the
        other priorities 1..254 (a priority queue), or, when the refusal of fifo named an argument
        of the queue's own, that argument alone and with ``x-queue-type`` quorum and stream, to
        tell the queue's type. At most 3 round trips."""
        session.channel.raw.queue_declare(name, passive=True)
        fifo, quorum = QueueSpec(name), QueueSpec(name, replicated=True)
        likely = [fifo, quorum, *(QueueSpec(name, QueueType.PRIORITY, n) for n in _LIKELY_PRIORITIES)]
        found, refusals = probe_queue_spec(session.connection, likely, timeout=self._connect_timeout)
        argument, value = _refused_argument(refusals.get(fifo, ""))
        if found is not None or argument is None:
            return found or fifo
        if argument == QUEUE_TYPE_ARGUMENT:
            return _typed_spec(name, str(value), _refused_argument(refusals.get(quorum, ""))[0])
        if argument == PRIORITY_ARGUMENT:
            rest = [n for n in range(1, MAX_PRIORITY_LIMIT + 1) if n not in _LIKELY_PRIORITIES]
            wave = [QueueSpec(name, QueueType.PRIORITY, n) for n in rest]
            found = probe_queue_spec(session.connection, wave, timeout=self._connect_timeout).match
            return found or QueueSpec(name, foreign=argument)  # a priority queue with arguments of its own
        own = {argument: value}
        classic = QueueSpec(name, foreign=argument)
        wave2 = [(classic, own), *(
            (_typed_spec(name, kind, argument), {**own, QUEUE_TYPE_ARGUMENT: kind}) for kind in _FOREIGN_PROBES
        )]
        found, refusals = probe_queue_spec(session.connection, wave2, timeout=self._connect_timeout)
        then, kind = _refused_argument(refusals.get(classic, ""))
        if found is None and then == QUEUE_TYPE_ARGUMENT:
            return _typed_spec(name, str(kind), argument)
        return found or classic

    def list_specs(self, candidates: Iterable[str]) -> list[QueueSpec]:
        """The vhost's queues from the management API; else those of ``candidates`` that exist."""
        answered, queues = self._management_get("/api/queues/{vhost}")
        if answered:
            return [_reported_spec(queue) for queue in queues or ()]
        found = (self.lookup(name) for name in candidates)
        return [spec for spec in found if spec is not None]

    def count(self, queue: str) -> int:
        return self._run(queue, lambda session: int(
            session.channel.raw.queue_declare(queue, passive=True).message_count
        ))

    def purge(self, queue: str) -> int:
        return self._run(queue, lambda session: int(session.channel.raw.queue_purge(queue) or 0))

    def delete(self, queue: str, *, if_empty: bool = False) -> None:
        def delete(session: _Session) -> None:
            channel = session.channel.raw
            channel.queue_declare(queue, passive=True)  # queue.delete of a missing queue succeeds
            try:
                channel.queue_delete(queue, if_empty=if_empty)
            except amqp.exceptions.PreconditionFailed as exc:  # RabbitMQ's 406 for if_empty
                raise QueueNotEmpty(queue) from exc

        self._run(queue, delete)

    def peek(self, queue: str, limit: int) -> list[Delivery]:
        """``basic.get`` up to ``limit`` messages unacknowledged, then reject them all with
        ``requeue``: RabbitMQ puts each back at its place (marked redelivered; on a quorum
        queue each peek counts as a delivery). One round trip per message, and one passive
        declare, after which the broker has put them back."""
        def peek(session: _Session) -> list[Delivery]:
            channel = session.channel.raw
            taken: list[Any] = []
            while len(taken) < limit and (raw := channel.basic_get(queue, no_ack=False)) is not None:
                taken.append(raw)
            for raw in reversed(taken):
                channel.basic_reject(raw.delivery_tag, requeue=True)
            if taken:  # a synchronous call after the rejects: they are done when peek returns
                channel.queue_declare(queue, passive=True)
            return [delivery(queue, raw, None) for raw in taken]

        return self._run(queue, peek)

    def published_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        """From the management API's message statistics, when it answers; else None."""
        answered, found = self._management_get("/api/queues/{vhost}")
        if not answered:
            return None
        wanted = set(queues)
        return {queue["name"]: int((queue.get("message_stats") or {}).get("publish", 0))
                for queue in found or () if queue["name"] in wanted}

    def consumer_counts(self, queues: Sequence[str]) -> dict[str, int] | None:
        """Consumers per queue from a passive ``queue.declare`` each (missing queues left out)."""
        counts: dict[str, int] = {}
        for queue in queues:
            try:
                counts[queue] = self._run(queue, lambda session: int(
                    session.channel.raw.queue_declare(queue, passive=True).consumer_count
                ))
            except QueueNotFound:
                continue
        return counts

    def unacked_counts(self) -> dict[str, int] | None:
        answered, queues = self._management_get("/api/queues/{vhost}")
        if not answered:
            return None
        return {queue["name"]: int(queue.get("messages_unacknowledged", 0)) for queue in queues or ()}

    # -- messages ------------------------------------------------------------------------------------

    def publish(self, queue: str, messages: Sequence[WireMessage], priority: int | None) -> None:
        if messages:
            self._run(queue, lambda session: session.channel.publish(
                queue, messages, priority, confirm_timeout=self._confirm_timeout, confirm=self._confirm
            ))

    def unconfirmed(self) -> AmqpBackend:
        """This backend (same sessions and consumers), publishing without confirms."""
        if self._unconfirmed is None:
            view = copy.copy(self)
            view._confirm = False
            self._unconfirmed = view._unconfirmed = view
        return self._unconfirmed

    # -- exchanges -------------------------------------------------------------------------------

    def declare_exchange(self, name: str, exchange_type: str, *, durable: bool, auto_delete: bool) -> None:
        self._run(name, lambda session: session.channel.raw.exchange_declare(
            name, exchange_type, durable=durable, auto_delete=auto_delete
        ))

    def exchange_exists(self, name: str) -> bool:
        try:
            self._run(name, lambda session: session.channel.raw.exchange_declare(name, "direct", passive=True))
        except QueueNotFound:  # the table's name for any 404
            return False
        return True

    def delete_exchange(self, name: str) -> None:
        def delete(session: _Session) -> None:
            session.channel.raw.exchange_declare(name, "direct", passive=True)  # exchange.delete never 404s
            session.channel.raw.exchange_delete(name)

        with _exchange_not_found(name):
            self._run(name, delete)

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.count(queue)  # QueueNotFound for the queue: after this, a 404 is the exchange's
        with _exchange_not_found(exchange):
            self._run(queue, lambda session: session.channel.raw.queue_bind(queue, exchange, routing_key))

    def publish_to_exchange(
        self, exchange: str, routing_key: str, messages: Sequence[WireMessage], priority: int | None, *, label: str
    ) -> None:
        if messages:
            with _exchange_not_found(exchange, unless_returned=True):
                self._run(label, lambda session: session.channel.publish(
                    routing_key, messages, priority, confirm_timeout=self._confirm_timeout, exchange=exchange,
                    confirm=self._confirm,
                ))

    def get(self, queue: str, *, ack: bool) -> Delivery | None:
        """``basic.get``. With ``ack``, the message stays unacknowledged on its session, which
        is held out of the pool until the delivery is settled (or the backend closes, which
        requeues it)."""
        with self._pool.session() as session:
            raw, channel = self._on(
                session, queue, lambda s: (s.channel.raw.basic_get(queue, no_ack=not ack), s.channel)
            )
            if raw is None or not ack:
                return None if raw is None else delivery(queue, raw, None)
            self._pool.hold(session)
            return delivery(queue, raw, partial(self._settle_held, session, channel))

    def _settle_held(self, session: _Session, channel: SessionChannel, message: Delivery, how: Settlement) -> None:
        """Settle on the session the message was taken on. Nothing is sent after :meth:`close`
        or once a heartbeat found the connection broken; a settlement that fails raises
        ``BrokerUnavailable``. Either way the broker gives the message back."""
        try:
            with session.lock:
                if session.closed or session.error is not None:
                    return
                try:
                    with translate_errors(self._url, message.queue):
                        settle(channel.raw, message.tag, how)
                except BrokerUnavailable:
                    self._pool.discard(session)
                    raise
        finally:
            self._pool.release(session)

    def consumer(self, queues: Sequence[str], prefetch: int) -> AmqpConsumer:
        """A consumer with one prefetch across ``queues``; per queue when the broker refuses that
        (quorum queues and streams do, closing the connection: then on a second connection)."""
        try:
            consumer = AmqpConsumer(self._factory(), queues, prefetch, url=self._url, on_close=self._forget)
        except BrokerUnavailable as exc:
            if not _refuses_global_qos(exc):
                raise
            consumer = AmqpConsumer(self._factory(), queues, prefetch, url=self._url, on_close=self._forget, per_queue=True)
        with self._consumers_lock:
            self._consumers.add(consumer)
        return consumer

    def _forget(self, consumer: AmqpConsumer) -> None:
        with self._consumers_lock:
            self._consumers.discard(consumer)

    def close(self) -> None:
        """Close every consumer and session; unsettled messages go back to their queues."""
        with self._consumers_lock:
            consumers, self._consumers = self._consumers, set()
        for consumer in consumers:
            consumer.close()
        self._pool.close()

    # -- management HTTP API -------------------------------------------------------------------

    def _management_get(self, path: str) -> tuple[bool, Any]:
        """GET ``path`` (``{vhost}`` filled in) from the management API: ``(True, its JSON)``,
        ``(True, None)`` for a 404, ``(False, None)`` when it does not answer usefully (then it
        is not asked again for a minute)."""
        if time.monotonic() < self._management_down_until:
            return False, None
        if self._management is None:
            with self._pool.session() as session:  # the connection's parameters; nothing is sent
                connection = session.connection
                token = base64.b64encode(f"{connection.userid}:{connection.password}".encode()).decode()
                self._management = (
                    f"http://{connection.hostname}:{self._management_port}",
                    quote(connection.virtual_host or "/", safe=""), f"Basic {token}",
                )
        root, vhost, authorization = self._management
        request = urllib.request.Request(root + path.format(vhost=vhost))
        request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=self._connect_timeout) as response:
                return True, json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return True, None
        except (OSError, ValueError):
            pass
        self._management_down_until = time.monotonic() + _MANAGEMENT_RETRY
        return False, None


class AmqpConsumer:
    """``basic.consume`` of some queues on a connection of its own, with a channel-wide prefetch;
    ``per_queue``: a prefetch per queue (quorum queues and streams refuse a channel-wide one),
    where changing it starts the consumers again (a consumer keeps the limit it started with;
    what it was sent stays in flight, settled as before).

    :meth:`fetch` waits on the connection's socket and a wake-up socket (``selectors``),
    without holding the lock that guards the connection. Deliveries are settled from any thread
    without waiting for that lock: when it is free the ack or reject is written at once (one
    frame, no answer); while another thread holds it (reading), the settlement is queued and
    the wake-up socket pinged, and the thread in :meth:`fetch` writes the queued ones before it
    reads (measured, a settling thread spent a quarter of its time waiting for the lock). With
    heartbeats, ``fetch`` wakes every half interval to check them, and a daemon thread does so
    (and writes queued settlements) while no ``fetch`` waits; :meth:`close` writes them before
    it cancels. A settlement that cannot be written (the connection broke) makes ``fetch``
    raise ``BrokerUnavailable``; one after :meth:`close` or after the connection was found
    broken is dropped. The broker redelivers those messages.
    """

    def __init__(
        self, connection: kombu.Connection, queues: Sequence[str], prefetch: int, *, url: str,
        on_close: Callable[[AmqpConsumer], None] | None = None, per_queue: bool = False,
    ) -> None:
        self._connection = connection
        self._per_queue = per_queue
        self._url = url
        self._label = ", ".join(queues)
        self._on_close = on_close
        self._lock = threading.Condition(threading.Lock())
        self._buffer: deque[Delivery] = deque()
        self._settlements: deque[tuple[Delivery, Settlement]] = deque()  # made, not yet written
        self._wake_guard = threading.Lock()  # the wake-up socket is not closed while pinged
        self._tags: dict[str, str] = {}  # consumer tag -> its queue
        self._waiting = 0  # threads waiting on the socket
        self._woken = False  # wake(): the next fetch returns at once
        self._closed = False
        self._broken: JobsError | None = None  # why the connection (or channel) is unusable
        self._stopped = threading.Event()  # ends the heartbeat thread
        self._deleted: str | None = None  # every consumed queue was deleted; the last one
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._channel: Any = None
        try:
            with translate_errors(url, self._label):
                connect(connection)
                channel = self._channel = connection.channel()
                channel.auto_decode = False
                channel.basic_qos(0, prefetch, not per_queue)  # global: one limit across the queues
                # py-amqp's connection itself: Kombu's would silently reconnect once broken
                self._raw: Any = connection.connection
                self._selector.register(self._raw.sock, selectors.EVENT_READ)
            for queue in queues:
                self._subscribe(queue)
        except BaseException:
            self._closed = True
            self._release()
            raise
        self._tick = self._raw.heartbeat / 2 if self._raw.heartbeat else None
        if self._tick is not None:
            threading.Thread(target=self._keep_alive, name=f"mindtrace-heartbeats {self._label}", daemon=True).start()

    def __repr__(self) -> str:
        return f"<AmqpConsumer {self._label!r}>"

    def fetch(self, max_count: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._closed:
                    return []
                self._write_settlements()
                self._pump()
                if self._buffer:
                    return [self._buffer.popleft() for _ in range(min(max_count, len(self._buffer)))]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._woken:
                    self._woken = False
                    return []
                self._waiting += 1
            try:
                wait = remaining if self._tick is None else min(remaining, self._tick)
                for key, _ in self._selector.select(wait):
                    if key.fileobj is self._wake_r:
                        self._wake_r.recv(4096)
            finally:
                with self._lock:
                    self._waiting -= 1
                    self._lock.notify_all()

    def set_prefetch(self, prefetch: int) -> None:
        with self._lock:
            if self._closed:
                return
            self._check()
            with translate_errors(self._url, self._label, self._mark_broken):
                self._channel.basic_qos(0, prefetch, not self._per_queue)  # may buffer deliveries meanwhile
                if self._per_queue:  # the consumers' own limit holds for consumers started later
                    for tag, queue in list(self._tags.items()):
                        self._channel.basic_cancel(tag)
                        del self._tags[tag]
                        self._subscribe(queue)
            self._wake()

    def _subscribe(self, queue: str) -> None:
        with translate_errors(self._url, queue, self._mark_broken):
            tag = self._channel.basic_consume(
                queue, callback=partial(self._on_message, queue), on_cancel=partial(self._on_cancel, queue)
            )
        self._tags[tag] = queue

    def close(self) -> None:
        """``basic.cancel``, then close the channel: the broker requeues what was not settled."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopped.set()
            self._wake()
            while self._waiting:
                self._lock.wait()
            self._buffer.clear()
            if self._broken is None:
                with suppress(JobsError):  # broken now: the broker redelivers them
                    self._write_settlements()
            self._release()
        if self._on_close is not None:
            self._on_close(self)

    # -- under the lock ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._broken is not None:
            broken = self._broken
            reason = broken.reason if isinstance(broken, BrokerUnavailable) else "closed"
            detail = broken.detail if isinstance(broken, BrokerUnavailable) else str(broken)
            raise BrokerUnavailable(self._url, f"the connection consuming {self._label} broke ({detail})", reason)
        if self._deleted is not None:
            raise QueueNotFound(self._deleted)

    def _pump(self) -> None:
        """Dispatch every frame that can be read without waiting: deliveries land in the
        buffer; then check heartbeats."""
        self._check()
        with translate_errors(self._url, self._label, self._mark_broken):
            read_pending(self._raw)

    def _keep_alive(self) -> None:
        """Heartbeats while no :meth:`fetch` waits (it checks them itself); a broken connection
        is raised by the next ``fetch``."""
        assert self._tick is not None
        while not self._stopped.wait(self._tick):
            with self._lock:
                if self._closed or self._broken is not None:
                    return
                if not self._waiting:
                    with suppress(JobsError):
                        self._write_settlements()
                        self._pump()

    def _on_message(self, queue: str, raw: Any) -> None:
        self._buffer.append(delivery(queue, raw, self._settle))

    def _on_cancel(self, queue: str, tag: str) -> None:
        """The broker cancelled a consumer (its queue was deleted): consume the others; with
        none left, :meth:`fetch` raises :class:`QueueNotFound`."""
        logger.warning("queue %r was deleted; consuming the %d others", queue, len(self._tags) - 1)
        self._tags.pop(tag, None)
        if not self._tags:
            self._deleted = queue

    def _settle(self, message: Delivery, how: Settlement) -> None:
        """Write the settlement now if the connection is free (a fetch waiting on the socket
        does not hold it), else queue it for the thread reading (see the class docstring)."""
        if self._closed or self._broken is not None:
            return  # closing or the broken connection gave it back to its queue
        self._settlements.append((message, how))
        if not self._lock.acquire(blocking=False):
            with self._wake_guard, suppress(OSError):  # closed, or full: a wake-up is pending anyway
                self._wake_w.send(b"\0")
            return
        try:
            if not self._closed and self._broken is None:
                self._write_settlements()
        finally:
            self._lock.release()

    def _write_settlements(self) -> None:
        """``basic.ack``/``basic.reject`` for every queued settlement (no answers to wait for)."""
        while self._settlements:
            message, how = self._settlements.popleft()
            with translate_errors(self._url, message.queue, self._mark_broken):
                settle(self._channel, message.tag, how)

    def _mark_broken(self, error: JobsError) -> None:
        self._broken = error
        self._wake()

    def wake(self) -> None:
        with self._lock:
            self._woken = True
            self._wake()

    def _wake(self) -> None:
        if self._waiting:
            with suppress(OSError):  # full: a wake-up is pending anyway
                self._wake_w.send(b"\0")

    def _release(self) -> None:
        """Cancel and close; a broken connection is only dropped (a close would wait for an
        answer that may never come)."""
        if self._broken is not None:
            with suppress(Exception):
                self._connection.collect()
                self._connection.release()  # a pool's connection goes back to it, to reconnect
        else:
            with suppress(Exception):  # best effort: closing the connection requeues too
                if self._channel is not None:
                    for tag in list(self._tags):
                        self._channel.basic_cancel(tag)
                    self._channel.close()
            with suppress(Exception):
                self._connection.release()
        self._selector.close()
        with self._wake_guard:
            self._wake_r.close()
            self._wake_w.close()
