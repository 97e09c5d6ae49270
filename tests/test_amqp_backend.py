"""The RabbitMQ backend (``backends/amqp.py``) against a real broker, without mocks.

Round trips are counted with :class:`RoundTrips`, which wraps two public members of the
py-amqp connection: ``frame_writer`` (every frame the client sends) and ``blocking_read``
(every frame it reads, with the read's timeout). A round trip starts when the client sends a
method that asks for an answer and ends at the first read after it that may wait (timeout not
0). Methods that ask for none (``close-ok``, ``basic.ack``, ``basic.reject``) and heartbeats
start none, and py-amqp's non-blocking reads (``timeout=0``, e.g. its check for
``connection.blocked`` before each publish) end none. So a burst of pipelined requests whose
answers are all read afterwards counts once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import kombu
import pytest

from mindtrace_kombu.backends.amqp import AmqpBackend
from mindtrace_kombu.backends.base import WireMessage
from mindtrace_kombu.errors import BrokerUnavailable, QueueNotEmpty, QueueNotFound
from mindtrace_kombu.queues import QueueSpec, QueueType
from mindtrace_kombu.transport.amqp import Transport

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672//")
MASKED_URL = str(kombu.Connection(AMQP_URL).as_uri())
_NO_ANSWER = {(20, 41), (60, 80), (60, 90), (60, 120), (10, 51)}  # close-ok, ack, reject, nack, connection close-ok


class RoundTrips:
    """Round trips and frames sent on one py-amqp connection (see the module docstring)."""

    def __init__(self, raw: Any) -> None:
        self.count = 0
        self.frames_sent = 0
        self._asked = False
        self._write, self._read = raw.frame_writer, raw.blocking_read
        raw.frame_writer, raw.blocking_read = self._on_write, self._on_read

    def _on_write(self, frame_type: int, channel: int, method: Any, args: Any, content: Any) -> Any:
        self.frames_sent += 1
        if frame_type == 1 and tuple(method) not in _NO_ANSWER:
            self._asked = True
        return self._write(frame_type, channel, method, args, content)

    def _on_read(self, timeout: float | None = None) -> Any:
        if self._asked and timeout != 0:
            self.count += 1
            self._asked = False
        return self._read(timeout)


def message(body: bytes = b'{"n": 0}', **properties: Any) -> WireMessage:
    return WireMessage(body, "application/json", "utf-8", {"x-test": 1}, properties)


@pytest.fixture(scope="module")
def broker() -> str:
    try:
        with kombu.Connection(AMQP_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001
        reason = f"RabbitMQ at {MASKED_URL} is unreachable: {exc}"
        if os.environ.get("MINDTRACE_REQUIRE_BROKERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return AMQP_URL


@pytest.fixture
def connections() -> list[kombu.Connection]:
    """Every connection the backend under test made."""
    return []


@pytest.fixture
def factory(broker: str, connections: list[kombu.Connection]) -> Callable[[], kombu.Connection]:
    def make() -> kombu.Connection:
        connection = kombu.Connection(broker, transport=Transport, connect_timeout=3)
        connections.append(connection)
        return connection

    return make


@pytest.fixture
def queues(broker: str) -> Iterator[Callable[[], str]]:
    """Unique queue names; every one is deleted afterwards."""
    names: list[str] = []

    def new() -> str:
        names.append(f"test-amqp-backend-{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield new
    with kombu.Connection(broker) as connection:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)


@pytest.fixture
def backend(factory: Callable[[], kombu.Connection]) -> Iterator[AmqpBackend]:
    # port 1 refuses at once: specs are found by probing, as without the management plugin
    backend = AmqpBackend(factory, url=MASKED_URL, management_port=1, connect_timeout=3)
    yield backend
    backend.close()


def warm_round_trips(backend: AmqpBackend, connections: list[kombu.Connection], queue: str) -> RoundTrips:
    """Open the backend's session (connection and channel), then count on it."""
    backend.count(queue)
    assert len(connections) == 1
    return RoundTrips(connections[0].connection)


# -- lookup and declare ----------------------------------------------------------------------------


@pytest.mark.parametrize(("max_priority", "round_trips"), [(None, 2), (10, 2), (255, 2), (254, 3), (1, 3)])
def test_lookup_takes_at_most_three_round_trips(
    backend: AmqpBackend, connections: list[kombu.Connection], queues: Callable[[], str],
    max_priority: int | None, round_trips: int,
) -> None:
    """Given a queue declared fifo or with max_priority 10, 255, 254 or 1, and no management API
    When its spec is looked up on an open session
    Expect the declared spec, in at most 3 round trips: a passive declare, one wave of probes
    (fifo, 10, 255), and for the other priorities a second wave (1..254 at once)"""
    name = queues()
    spec = QueueSpec.create(name, max_priority=max_priority)
    backend.declare(spec)
    trips = warm_round_trips(backend, connections, name)

    assert backend.lookup(name) == spec
    assert trips.count <= 3
    assert trips.count == round_trips

    for _ in range(5):  # the session stays sound; refused probe channels are freed at once, the
        assert backend.lookup(name) == spec  # matching one when its close-ok is read
    assert backend.count(name) == 0
    assert len(connections) == 1
    assert len(connections[0].connection.channels) <= 3  # itself, the session's, maybe one closing


@pytest.mark.parametrize(
    ("arguments", "expected", "round_trips"),
    [
        ({"x-queue-type": "quorum"}, {"replicated": True}, 2),
        ({"x-queue-type": "quorum", "x-delivery-limit": 5}, {"replicated": True, "foreign": "x-delivery-limit"}, 2),
        ({"x-queue-type": "stream"}, {"foreign": "stream"}, 2),
        ({"x-max-length": 10}, {"foreign": "x-max-length"}, 3),
        ({"x-queue-type": "quorum", "x-max-length": 10}, {"replicated": True, "foreign": "x-max-length"}, 3),
        ({"x-queue-type": "stream", "x-max-length-bytes": 10**6}, {"foreign": "stream"}, 3),
    ],
    ids=["quorum", "quorum-delivery-limit", "stream", "max-length", "quorum-max-length", "stream-max-bytes"],
)
def test_lookup_recognises_queues_declared_elsewhere_in_at_most_three_round_trips(
    backend: AmqpBackend, connections: list[kombu.Connection], queues: Callable[[], str],
    arguments: dict[str, Any], expected: dict[str, Any], round_trips: int,
) -> None:
    """Given a quorum, stream or classic queue declared with py-amqp, and no management API
    When its spec is looked up on an open session
    Expect its type and first argument of its own, in at most 3 round trips: a passive declare,
    one wave (fifo, quorum, 10, 255), and for an argument of its own a wave with that argument"""
    name = queues()
    with kombu.Connection(AMQP_URL) as connection:
        connection.channel().queue_declare(name, durable=True, auto_delete=False, arguments=arguments)
    trips = warm_round_trips(backend, connections, name)

    assert backend.lookup(name) == QueueSpec(name, **expected)
    assert trips.count == round_trips
    assert backend.count(name) == 0
    assert len(connections) == 1


def test_lookup_of_a_missing_queue(
    backend: AmqpBackend, connections: list[kombu.Connection], queues: Callable[[], str]
) -> None:
    """Given an existing queue on an open session
    When another, missing queue is looked up
    Expect None in at most 3 round trips (the 404, and py-amqp reopening the channel)"""
    name = queues()
    backend.declare(QueueSpec(name))
    trips = warm_round_trips(backend, connections, name)

    assert backend.lookup(queues()) is None
    assert trips.count <= 3
    assert backend.count(name) == 0


def test_declare_is_idempotent_and_a_mismatch_returns_the_existing_spec(
    backend: AmqpBackend, queues: Callable[[], str]
) -> None:
    """Given a priority queue (max 10) holding a message
    When it is declared again with the same spec, then as fifo and as priority 255
    Expect the same spec every time and the message kept"""
    name = queues()
    spec = QueueSpec(name, QueueType.PRIORITY, 10)
    assert backend.declare(spec) == spec
    backend.publish(name, [message()], 5)

    assert backend.declare(spec) == spec
    assert backend.declare(QueueSpec(name)) == spec
    assert backend.declare(QueueSpec(name, QueueType.PRIORITY, 255)) == spec
    assert backend.count(name) == 1
    assert backend.list_specs([name, queues()]) == [spec]


# -- delete, count, purge ------------------------------------------------------------------------------


def test_delete_if_empty_keeps_a_queue_holding_messages(backend: AmqpBackend, queues: Callable[[], str]) -> None:
    """Given a queue holding one message
    When it is deleted with if_empty, then purged and deleted with if_empty again
    Expect QueueNotEmpty and the queue kept with its message; then it is gone"""
    name = queues()
    backend.declare(QueueSpec(name))
    backend.publish(name, [message()], None)

    with pytest.raises(QueueNotEmpty):
        backend.delete(name, if_empty=True)
    assert backend.count(name) == 1

    assert backend.purge(name) == 1
    backend.delete(name, if_empty=True)
    assert backend.lookup(name) is None
    with pytest.raises(QueueNotFound):
        backend.delete(name)
    with pytest.raises(QueueNotFound):
        backend.count(name)


# -- publish -------------------------------------------------------------------------------------------


def test_publish_to_a_missing_queue_raises_queue_not_found(backend: AmqpBackend, queues: Callable[[], str]) -> None:
    """Given a missing queue and an existing one
    When one message, then a batch of three, is published to the missing queue
    Expect QueueNotFound each time, and the session still publishing to the existing queue"""
    missing, existing = queues(), queues()
    backend.declare(QueueSpec(existing))

    with pytest.raises(QueueNotFound):
        backend.publish(missing, [message()], None)
    with pytest.raises(QueueNotFound):
        backend.publish(missing, [message()] * 3, None)

    backend.publish(existing, [message()], None)
    assert backend.count(existing) == 1
    assert backend.lookup(missing) is None


def test_a_batch_is_confirmed_in_one_round_trip(
    backend: AmqpBackend, connections: list[kombu.Connection], queues: Callable[[], str]
) -> None:
    """Given a queue, on a session that has published before (confirm mode on)
    When 500 messages are published in one call
    Expect one round trip, and the count exact as soon as publish returns"""
    name = queues()
    backend.declare(QueueSpec(name))
    backend.publish(name, [message()], None)
    trips = warm_round_trips(backend, connections, name)

    backend.publish(name, [message(f'{{"n": {n}}}'.encode()) for n in range(500)], None)

    assert trips.count == 1
    assert backend.count(name) == 501


def test_messages_travel_byte_for_byte(backend: AmqpBackend, queues: Callable[[], str]) -> None:
    """Given a priority queue
    When a binary message and a text message with Celery-style properties are published
    Expect both taken back with identical bytes, type, encoding, headers and properties, and
    the priorities published; RabbitMQ orders 200 as 5 (its cap) but keeps the property"""
    name = queues()
    backend.declare(QueueSpec(name, QueueType.PRIORITY, 5))
    binary = WireMessage(bytes(range(256)), "application/octet-stream", "binary", {"k": "v"}, {})
    text = WireMessage(
        "héllo".encode(), "application/json", "utf-8", {"task": "t", "id": "1"},
        {"correlation_id": "1", "reply_to": "replies", "expiration": 60},
    )
    backend.publish(name, [binary], 4)
    backend.publish(name, [text], 200)

    first, second = backend.get(name, ack=False), backend.get(name, ack=False)
    assert first is not None and second is not None
    assert (first.message, first.priority) == (text, 200)
    assert (second.message, second.priority) == (binary, 4)
    assert backend.get(name, ack=False) is None


# -- sessions ------------------------------------------------------------------------------------------


def test_the_pool_closes_sessions_beyond_max_idle(broker: str, queues: Callable[[], str]) -> None:
    """Given a backend keeping at most 4 idle sessions, whose connections take a while to make
    When 20 threads publish one message each, all at once
    Expect 20 connections made, at most 4 still open afterwards, and all 20 messages there"""
    made: list[kombu.Connection] = []

    def slow_factory() -> kombu.Connection:
        time.sleep(0.2)  # every thread borrows before any gives back
        made.append(kombu.Connection(broker, transport=Transport, connect_timeout=3))
        return made[-1]

    backend = AmqpBackend(slow_factory, url=MASKED_URL, max_idle=4)
    name = queues()
    try:
        backend.declare(QueueSpec(name))
        start = threading.Barrier(20)

        def publish() -> None:
            start.wait()
            backend.publish(name, [message()], None)

        threads = [threading.Thread(target=publish) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(made) == 20
        assert sum(connection.connected for connection in made) <= 4
        assert backend.count(name) == 20
    finally:
        backend.close()
    assert not any(connection.connected for connection in made)


def test_a_session_whose_connection_broke_is_discarded(
    backend: AmqpBackend, connections: list[kombu.Connection], queues: Callable[[], str]
) -> None:
    """Given a backend whose one pooled session is open
    When that connection breaks under it (its socket shut down)
    Expect BrokerUnavailable once, then the next operation on a new connection"""
    name = queues()
    backend.declare(QueueSpec(name))
    backend.count(name)
    connections[0].connection.sock.shutdown(socket.SHUT_RDWR)

    with pytest.raises(BrokerUnavailable):
        backend.count(name)
    backend.publish(name, [message()], None)

    assert backend.count(name) == 1
    assert len(connections) == 2
    assert not connections[0].connected


def test_kombus_stock_transport_works_too(broker: str, queues: Callable[[], str]) -> None:
    """Given connections on Kombu's stock py-amqp transport, as a Celery app's pool gives, with
    and without its confirm_publish option
    When messages are published, one to a missing queue, and taken back
    Expect the same confirms, QueueNotFound and bytes as on this package's transport"""
    name = queues()
    for options in ({}, {"confirm_publish": True}):
        backend = AmqpBackend(lambda: kombu.Connection(broker, transport_options=options), url=MASKED_URL)
        try:
            backend.declare(QueueSpec(name))
            backend.publish(name, [message(bytes([n])) for n in range(3)], None)
            assert backend.count(name) == 3
            with pytest.raises(QueueNotFound):
                backend.publish(queues(), [message()] * 2, None)
            taken = [backend.get(name, ack=False) for _ in range(3)]
            assert [d.message.body for d in taken if d] == [b"\x00", b"\x01", b"\x02"]
        finally:
            backend.close()


def test_a_held_message_is_settled_from_another_thread_and_requeued_on_close(
    backend: AmqpBackend, factory: Callable[[], kombu.Connection], queues: Callable[[], str]
) -> None:
    """Given a queue holding two messages
    When one is taken with ack=True and acked from another thread, and the other taken with
    ack=True and left unsettled when the backend closes
    Expect the first gone and the second back in the queue"""
    name = queues()
    backend.declare(QueueSpec(name))
    backend.publish(name, [message(b"1"), message(b"2")], None)

    first = backend.get(name, ack=True)
    assert first is not None and first.message.body == b"1"
    acker = threading.Thread(target=first.ack)
    acker.start()
    acker.join()
    second = backend.get(name, ack=True)
    assert second is not None and second.message.body == b"2"
    assert backend.count(name) == 0

    backend.close()
    second.ack()  # dropped: closing the channel gave it back

    other = AmqpBackend(factory, url=MASKED_URL)
    try:
        assert other.count(name) == 1
        again = other.get(name, ack=False)
        assert again is not None and again.message.body == b"2" and again.redelivered
    finally:
        other.close()


# -- consumers -----------------------------------------------------------------------------------------


def test_an_ack_from_another_thread_while_fetch_waits(
    backend: AmqpBackend, connections: list[kombu.Connection], queues: Callable[[], str]
) -> None:
    """Given a consumer with prefetch 1 holding one unsettled delivery of two
    When a thread waits in fetch, and the main thread acks the delivery meanwhile
    Expect the ack not to wait for the fetch, nothing sent while waiting, and the waiting
    thread to get the second delivery as soon as the broker pushes it"""
    name = queues()
    backend.declare(QueueSpec(name))
    backend.publish(name, [message(b"1"), message(b"2")], None)
    consumer = backend.consumer([name], prefetch=1)
    [first] = consumer.fetch(10, timeout=5)
    trips = RoundTrips(connections[-1].connection)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.extend(consumer.fetch(10, timeout=10)))
    waiter.start()
    time.sleep(0.3)  # the waiter is in select()
    assert trips.frames_sent == 0  # no polling

    started = time.monotonic()
    first.ack()
    acked = time.monotonic()
    waiter.join()

    assert acked - started < 0.2
    assert time.monotonic() - started < 2
    assert [delivery.message.body for delivery in got] == [b"2"]
    got[0].ack()
    consumer.close()
    assert backend.count(name) == 0


def test_closing_a_consumer_requeues_what_was_not_settled(backend: AmqpBackend, queues: Callable[[], str]) -> None:
    """Given a consumer holding three deliveries
    When it acks the first and closes
    Expect the other two back in the queue, in order, marked redelivered"""
    name = queues()
    backend.declare(QueueSpec(name))
    backend.publish(name, [message(b"1"), message(b"2"), message(b"3")], None)
    consumer = backend.consumer([name], prefetch=3)
    deliveries: list[Any] = []
    while len(deliveries) < 3:
        deliveries += consumer.fetch(3, timeout=5)

    deliveries[0].ack()
    consumer.close()
    deliveries[1].ack()  # after close: dropped

    assert backend.count(name) == 2
    rest = [backend.get(name, ack=False) for _ in range(2)]
    assert [(d.message.body, d.redelivered) for d in rest if d] == [(b"2", True), (b"3", True)]


def test_set_prefetch_applies_to_a_running_consumer(backend: AmqpBackend, queues: Callable[[], str]) -> None:
    """Given a consumer of two queues with prefetch 1 holding one unsettled delivery
    When its prefetch is raised to 3
    Expect two more deliveries (one limit across both queues), each named by its queue"""
    first, second = queues(), queues()
    for name in (first, second):
        backend.declare(QueueSpec(name))
    backend.publish(first, [message(b"a1"), message(b"a2")], None)
    backend.publish(second, [message(b"b1")], None)
    consumer = backend.consumer([first, second], prefetch=1)
    held = consumer.fetch(10, timeout=5)
    assert len(held) == 1
    assert consumer.fetch(10, timeout=0.3) == []

    consumer.set_prefetch(3)
    while len(held) < 3:
        more = consumer.fetch(10, timeout=5)
        assert more
        held += more

    expected = [(first, b"a1"), (first, b"a2"), (second, b"b1")]
    assert sorted((d.queue, d.message.body) for d in held) == sorted(expected)
    for delivery in held:
        delivery.reject(requeue=delivery.queue == second)
    consumer.close()
    assert (backend.count(first), backend.count(second)) == (0, 1)


def test_a_broken_consumer_connection_raises_and_drops_settlements(
    backend: AmqpBackend, connections: list[kombu.Connection], queues: Callable[[], str]
) -> None:
    """Given a consumer holding a delivery
    When its connection breaks (the socket shut down under it)
    Expect fetch to raise BrokerUnavailable, the ack to be dropped, and the broker to requeue it"""
    name = queues()
    backend.declare(QueueSpec(name))
    backend.publish(name, [message()], None)
    consumer = backend.consumer([name], prefetch=1)
    [delivery] = consumer.fetch(1, timeout=5)

    connections[-1].connection.sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(BrokerUnavailable):
        consumer.fetch(1, timeout=5)
    delivery.ack()
    consumer.close()

    deadline = time.monotonic() + 5
    while backend.count(name) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.count(name) == 1
