"""The Kombu transport ``mindtrace-memory`` (``mindtrace_kombu.transport.memory``) on the paths
Kombu and Celery use: exchanges (direct, topic, fanout), ``drain_events``, ``SimpleQueue``,
``basic_get``, requeues and channel close, exact queue order, AMQP errors, and the same messages
as a ``MemoryBackend`` with the same broker id."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Connection, Consumer, Exchange, Producer, Queue

import mindtrace_kombu.transport  # noqa: F401 - registers the transport alias
from mindtrace_kombu.backends.memory import MemoryBackend
from mindtrace_kombu.backends.wire import encode
from mindtrace_kombu.queues import QueueSpec


def unique(prefix: str = "q") -> str:
    """A name no other test uses (this module needs none of conftest's brokers)."""
    return f"test-{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker_id() -> str:
    return unique("broker")


@pytest.fixture
def connection(broker_id: str) -> Iterator[Connection]:
    with Connection(f"mindtrace-memory:///{broker_id}") as conn:
        yield conn


def collect(connection: Connection, queues: list[Queue], count: int) -> list[tuple[str, Any]]:
    """``count`` messages consumed with ``drain_events``, as (routing key, body), acked."""
    got: list[tuple[str, Any]] = []

    def on_message(body: Any, message: Any) -> None:
        got.append((message.delivery_info["routing_key"], body))
        message.ack()

    with Consumer(connection, queues, callbacks=[on_message], accept=["json"]):
        while len(got) < count:
            connection.drain_events(timeout=2)
    return got


def bodies(channel: Any, queue: str) -> list[Any]:
    """Every ready message of ``queue``, taken with ``basic_get(no_ack=True)``."""
    taken = []
    while (message := channel.basic_get(queue, no_ack=True)) is not None:
        taken.append(message.decode())
    return taken


def test_fanout_reaches_every_bound_queue(connection: Connection) -> None:
    """Given two queues bound to a fanout exchange, when one message is published to it, expect
    both queues to deliver it through drain_events."""
    exchange = Exchange(unique("fanout"), type="fanout")
    queues = [Queue(unique(), exchange=exchange), Queue(unique(), exchange=exchange)]
    channel = connection.channel()
    for queue in queues:
        queue(channel).declare()
    Producer(channel, exchange=exchange).publish({"n": 1})
    assert [body for _, body in collect(connection, queues, 2)] == [{"n": 1}, {"n": 1}]
    assert all(queue(channel).queue_declare(passive=True).message_count == 0 for queue in queues)


def test_topic_exchange_routes_by_pattern(connection: Connection) -> None:
    """Given queues bound with ``jobs.*`` and ``other.#`` to a topic exchange, when ``jobs.a``
    and ``misc.b`` are published, expect only ``jobs.a``, in the first queue."""
    exchange = Exchange(unique("topic"), type="topic")
    jobs = Queue(unique(), exchange=exchange, routing_key="jobs.*")
    other = Queue(unique(), exchange=exchange, routing_key="other.#")
    channel = connection.channel()
    jobs(channel).declare()
    other(channel).declare()
    producer = Producer(channel, exchange=exchange)
    producer.publish({"n": 1}, routing_key="jobs.a")
    producer.publish({"n": 2}, routing_key="misc.b")
    assert bodies(channel, jobs.name) == [{"n": 1}]
    assert bodies(channel, other.name) == []


def test_direct_exchange_delivers_with_its_routing_key(connection: Connection) -> None:
    """Given a queue bound to a direct exchange with key ``k``, when a message is published
    with ``k``, expect drain_events to deliver it with that routing key."""
    exchange = Exchange(unique("direct"), type="direct")
    queue = Queue(unique(), exchange=exchange, routing_key="k")
    queue(connection.channel()).declare()
    Producer(connection.channel(), exchange=exchange).publish({"n": 1}, routing_key="k")
    assert collect(connection, [queue], 1) == [("k", {"n": 1})]


def test_max_priority_queue_delivers_higher_first(connection: Connection) -> None:
    """Given ``Queue(max_priority=5)``, when priorities 1, 5, 3, 5, 0 are published, expect the
    exact order 5, 5 (publish order), 3, 1, 0 through a SimpleQueue."""
    queue = Queue(unique(), max_priority=5)
    producer = Producer(connection.channel())
    queue(producer.channel).declare()
    for n, priority in enumerate([1, 5, 3, 5, 0]):
        producer.publish({"n": n}, routing_key=queue.name, priority=priority)
    simple = connection.SimpleQueue(queue)
    assert [simple.get(timeout=1).payload["n"] for _ in range(5)] == [1, 3, 2, 0, 4]
    simple.close()


def test_priority_above_max_ranks_as_max(connection: Connection) -> None:
    """Given ``Queue(max_priority=3)``, when priorities 3 then 9 then 2 are published, expect
    3 and 9 to rank equal (publish order) before 2."""
    queue = Queue(unique(), max_priority=3)
    channel = connection.channel()
    queue(channel).declare()
    producer = Producer(channel)
    for n, priority in enumerate([3, 9, 2]):
        producer.publish({"n": n}, routing_key=queue.name, priority=priority)
    assert [body["n"] for body in bodies(channel, queue.name)] == [0, 1, 2]


def test_stack_queue_argument_delivers_last_first(connection: Connection) -> None:
    """Given a queue declared with ``x-mindtrace-queue-type: stack``, when 0, 1, 2 are
    published, expect 2, 1, 0."""
    queue = Queue(unique(), queue_arguments=QueueSpec.create("s", "stack").arguments())
    channel = connection.channel()
    queue(channel).declare()
    for n in range(3):
        Producer(channel).publish({"n": n}, routing_key=queue.name)
    assert [body["n"] for body in bodies(channel, queue.name)] == [2, 1, 0]


def test_queue_delete_if_empty_keeps_a_queue_with_messages(connection: Connection) -> None:
    """Given a queue holding one message and an empty one, when both are deleted with
    if_empty, expect the first kept with its message and the second gone."""
    channel = connection.channel()
    full, empty = Queue(unique()), Queue(unique())
    full(channel).declare()
    empty(channel).declare()
    Producer(channel).publish({"n": 1}, routing_key=full.name)
    channel.queue_delete(full.name, if_empty=True)
    channel.queue_delete(empty.name, if_empty=True)
    assert channel.queue_declare(full.name, passive=True).message_count == 1
    with pytest.raises(NotFound):
        channel.queue_declare(empty.name, passive=True)


def test_redeclare_with_another_spec_is_406(connection: Connection) -> None:
    """Given a fifo queue, when it is declared again with ``x-max-priority``, expect py-amqp's
    PreconditionFailed."""
    channel = connection.channel()
    name = unique()
    channel.queue_declare(name)
    with pytest.raises(PreconditionFailed):
        channel.queue_declare(name, arguments={"x-max-priority": 5})


@pytest.mark.parametrize(
    "operation",
    [
        lambda ch, q: ch.queue_declare(q, passive=True),
        lambda ch, q: ch.queue_purge(q),
        lambda ch, q: ch.basic_get(q),
        lambda ch, q: Producer(ch).publish({"n": 1}, routing_key=q),
        lambda ch, q: ch.basic_consume(q, False, lambda message: None, "tag"),
    ],
    ids=["passive-declare", "purge", "basic_get", "publish", "basic_consume"],
)
def test_undeclared_queue_is_404(connection: Connection, operation: Any) -> None:
    """Given a queue that was never declared, when a primitive names it, expect py-amqp's
    NotFound."""
    with pytest.raises(NotFound):
        operation(connection.channel(), unique())


def test_basic_reject_requeue_goes_first_in_line(connection: Connection) -> None:
    """Given 0, 1, 2 on a queue, when 0 is taken with basic_get and rejected with requeue,
    expect 0 (redelivered), 1, 2."""
    channel = connection.channel()
    queue = Queue(unique())
    queue(channel).declare()
    for n in range(3):
        Producer(channel).publish({"n": n}, routing_key=queue.name)
    message = channel.basic_get(queue.name)
    message.reject(requeue=True)
    again = channel.basic_get(queue.name, no_ack=True)
    assert again.decode() == {"n": 0} and again.delivery_info["redelivered"] is True
    assert bodies(channel, queue.name) == [{"n": 1}, {"n": 2}]


def test_channel_close_returns_unacked_first_in_original_order(connection: Connection) -> None:
    """Given 0..3 on a queue and a channel holding 0, 1, 2 unacknowledged, when that channel
    closes, expect 0, 1, 2 back first in their original order, then 3."""
    queue = Queue(unique())
    channel = connection.channel()
    queue(channel).declare()
    for n in range(4):
        Producer(channel).publish({"n": n}, routing_key=queue.name)
    holder = connection.channel()
    for _ in range(3):
        assert holder.basic_get(queue.name) is not None
    holder.close()
    assert [body["n"] for body in bodies(channel, queue.name)] == [0, 1, 2, 3]


def test_producer_batch_publishes_in_order(connection: Connection) -> None:
    """Given a Producer.batch() of 0..4, when the batch exits, expect all five queued in
    order."""
    channel = connection.channel()
    queue = Queue(unique())
    queue(channel).declare()
    producer = Producer(channel)
    with producer.batch():
        for n in range(5):
            producer.publish({"n": n}, routing_key=queue.name)
    assert [body["n"] for body in bodies(channel, queue.name)] == [0, 1, 2, 3, 4]


def test_drain_events_wakes_on_publish_from_another_thread(broker_id: str) -> None:
    """Given a consumer draining an empty queue, when another connection publishes from another
    thread 0.3 s later, expect drain_events to deliver it at once, having spent almost no CPU
    (it sleeps on the broker's condition instead of polling)."""
    queue = Queue(unique())
    with Connection(f"mindtrace-memory:///{broker_id}") as consumer_conn:
        queue(consumer_conn.channel()).declare()

        def publish() -> None:
            time.sleep(0.3)
            with Connection(f"mindtrace-memory:///{broker_id}") as producer_conn:
                Producer(producer_conn.channel()).publish({"n": 1}, routing_key=queue.name)

        thread = threading.Thread(target=publish)
        thread.start()
        started, cpu = time.monotonic(), time.thread_time()
        got = collect(consumer_conn, [queue], 1)
        waited, spent = time.monotonic() - started, time.thread_time() - cpu
        thread.join()
    assert got == [(queue.name, {"n": 1})]
    assert 0.25 < waited < 1.0
    assert spent < 0.05


def test_kombu_message_is_read_by_memory_backend(connection: Connection, broker_id: str) -> None:
    """Given a Kombu producer on broker B, when it publishes with headers and a correlation id,
    expect ``MemoryBackend(B)`` to get the same body, content type, encoding and headers."""
    channel = connection.channel()
    queue = Queue(unique())
    queue(channel).declare()
    Producer(channel).publish(
        {"n": 1}, routing_key=queue.name, headers={"h": "v"}, correlation_id="c-1",
    )
    delivery = MemoryBackend(broker_id).get(queue.name, ack=False)
    assert delivery is not None
    assert json.loads(delivery.message.body) == {"n": 1}
    assert delivery.message.content_type == "application/json"
    assert delivery.message.content_encoding == "utf-8"
    assert delivery.headers == {"h": "v"}
    assert delivery.message.properties["correlation_id"] == "c-1"


def test_memory_backend_message_is_read_by_kombu(connection: Connection, broker_id: str) -> None:
    """Given ``MemoryBackend(B)``, when it publishes a message encoded by ``wire.encode`` with
    headers, expect a Kombu consumer on broker B to receive the same body, content type and
    headers through drain_events."""
    backend = MemoryBackend(broker_id)
    name = backend.declare(QueueSpec.create(unique())).name
    options = {"headers": {"h": "v"}, "correlation_id": "c-2"}
    backend.publish(name, [encode({"n": 2}, options, "json")], None)
    received: list[Any] = []
    on_message = lambda body, m: received.append((body, m))  # noqa: E731
    with Consumer(connection, [Queue(name)], callbacks=[on_message]):
        connection.drain_events(timeout=2)
    body, message = received[0]
    assert body == {"n": 2}
    assert message.content_type == "application/json"
    assert message.headers == {"h": "v"}
    assert message.properties["correlation_id"] == "c-2"
    message.ack()
    assert backend.count(name) == 0 and backend.unacked_counts() == {}


def test_binary_and_compressed_bodies_survive(connection: Connection, broker_id: str) -> None:
    """Given a raw binary body and a zlib-compressed JSON body published by Kombu, expect Kombu
    to decode both unchanged and the backend to hold the exact binary bytes."""
    channel = connection.channel()
    queue = Queue(unique())
    queue(channel).declare()
    producer = Producer(channel)
    producer.publish(b"\x00\xff", routing_key=queue.name, content_type="application/octet-stream")
    producer.publish({"n": 3}, routing_key=queue.name, compression="zlib")
    assert bodies(channel, queue.name) == [b"\x00\xff", {"n": 3}]
    producer.publish(b"\x01\xfe", routing_key=queue.name, content_type="application/octet-stream")
    delivery = MemoryBackend(broker_id).get(queue.name, ack=False)
    assert delivery is not None and delivery.message.body == b"\x01\xfe"


def test_ack_from_another_thread_frees_prefetch_while_draining(connection: Connection) -> None:
    """Given a consumer with prefetch 1 holding message 0 while 1 is ready, when another thread
    acknowledges 0 during drain_events, expect 1 to be delivered by that same drain."""
    channel = connection.channel()
    queue = Queue(unique())
    queue(channel).declare()
    for n in range(2):
        Producer(channel).publish({"n": n}, routing_key=queue.name)
    received: list[Any] = []
    on_message = lambda body, m: received.append(m)  # noqa: E731
    with Consumer(connection, [queue], callbacks=[on_message], prefetch_count=1):
        connection.drain_events(timeout=1)
        acker = threading.Timer(0.2, received[0].ack)
        acker.start()
        connection.drain_events(timeout=2)
        acker.join()
        received[1].ack()
    assert [m.decode()["n"] for m in received] == [0, 1]


def test_deleted_queue_loses_its_bindings(connection: Connection) -> None:
    """Given a queue bound to a direct exchange, when it is deleted and declared again without
    a binding, expect a publish through the exchange to reach nothing (and raise nothing)."""
    exchange = Exchange(unique("direct"), type="direct")
    channel = connection.channel()
    queue = Queue(unique(), exchange=exchange, routing_key="k")
    queue(channel).declare()
    channel.queue_delete(queue.name)
    channel.queue_declare(queue.name)
    Producer(channel, exchange=exchange).publish({"n": 1}, routing_key="k")
    assert channel.queue_declare(queue.name, passive=True).message_count == 0


def test_publish_through_an_exchange_skips_a_queue_deleted_elsewhere(
    connection: Connection, broker_id: str,
) -> None:
    """Given two queues bound to a fanout exchange, when one is deleted through MemoryBackend
    and a message is published to the exchange, expect the other queue to get it."""
    exchange = Exchange(unique("fanout"), type="fanout")
    channel = connection.channel()
    kept, gone = Queue(unique(), exchange=exchange), Queue(unique(), exchange=exchange)
    kept(channel).declare()
    gone(channel).declare()
    MemoryBackend(broker_id).delete(gone.name)
    Producer(channel, exchange=exchange).publish({"n": 1})
    assert bodies(channel, kept.name) == [{"n": 1}]
