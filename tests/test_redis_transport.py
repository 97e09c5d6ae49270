"""The ``mindtrace-redis`` Kombu transport on a real Redis, through Kombu's own API.

Each test works under a ``global_keyprefix`` of its own on the database of ``REDIS_URL`` and
deletes its keys afterwards (by that prefix only; nothing is flushed). Kombu's integration
suite runs in ``test_kombu_integration.py``; these tests cover what it does not: the issues the
transport was rewritten for, leases, and this package's semantics.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import kombu
import pytest
import redis
from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Consumer, Exchange, Producer, Queue
from kombu.asynchronous.hub import Hub
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps, loads

from mindtrace_kombu.backends.base import UNPARSEABLE_CONTENT_TYPE, WireMessage
from mindtrace_kombu.backends.wire import encode_payload
from mindtrace_kombu.transport import sentinel
from mindtrace_kombu.transport.redis import Channel

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
REQUIRE = os.environ.get("MINDTRACE_REQUIRE_BROKERS") == "1"


@pytest.fixture(scope="module")
def server() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis unreachable: {exc}") if REQUIRE else pytest.skip(f"Redis unreachable: {exc}")
    return client


@pytest.fixture
def prefix(server: redis.Redis) -> Iterator[str]:
    """A ``global_keyprefix`` of the test's own; its keys are deleted afterwards."""
    name = f"mindtrace-transport-test-{uuid.uuid4().hex[:10]}:"
    yield name
    keys = list(server.scan_iter(match=f"{name}*", count=1000))
    if keys:
        server.delete(*keys)


def connect(prefix: str, **options: Any) -> kombu.Connection:
    return kombu.Connection(REDIS_URL, transport="mindtrace-redis",
                            transport_options={"global_keyprefix": prefix, **options})


def drain_until(connection: kombu.Connection, done: Callable[[], bool], timeout: float = 5.0) -> None:
    """``drain_events`` until ``done()`` or ``timeout``; one call may return having delivered
    nothing (a subscription confirmation), so keep going."""
    deadline = time.monotonic() + timeout
    while not done() and (left := deadline - time.monotonic()) > 0:
        try:
            connection.drain_events(timeout=min(left, 1.0))
        except socket.timeout:
            pass


def subscribe(*connections: kombu.Connection) -> None:
    """Let fanout consumers send PSUBSCRIBE and get it confirmed (fanout messages are not queued)."""
    for connection in connections:
        drain_until(connection, lambda: False, timeout=0.3)


def keep_and_ack(bodies: list[Any]) -> Callable[[Any, Any], None]:
    """A consumer callback that keeps each body and acks its message."""
    def callback(body: Any, message: Any) -> None:
        bodies.append(body)
        message.ack()
    return callback


def channel_of(connection: kombu.Connection) -> Channel:
    channel = connection.default_channel
    assert isinstance(channel, Channel)
    return channel


def test_hub_consumer_acking_later_gets_every_message(prefix: str) -> None:
    """Given a consumer on Kombu's event loop (prefetch 4) that acks each message 50 ms after
    delivery, when another thread publishes 100 messages one every 20 ms, expect all of them
    delivered once, in order, and nothing left in Redis."""
    queue = Queue("hub")
    received: list[int] = []
    acked: list[int] = []
    hub = Hub()

    def publish() -> None:
        with connect(prefix) as publisher:
            producer = Producer(publisher)
            for n in range(100):
                producer.publish(n, routing_key="hub", serializer="json")
                time.sleep(0.02)

    def ack(body: int, message: Any) -> None:
        message.ack()
        acked.append(body)

    def on_message(body: int, message: Any) -> None:
        received.append(body)
        hub.call_later(0.05, ack, body, message)

    with connect(prefix) as connection:
        channel = channel_of(connection)
        queue(channel).declare()
        with Consumer(connection, [queue], callbacks=[on_message], prefetch_count=4, accept=["json"]):
            connection.register_with_event_loop(hub)
            publisher = threading.Thread(target=publish)
            publisher.start()
            deadline = time.monotonic() + 30
            try:
                while len(acked) < 100 and time.monotonic() < deadline:
                    hub.run_once()
            finally:
                hub.close()
                publisher.join()
        assert received == list(range(100))
        assert sorted(acked) == list(range(100))
        assert channel.store.count("hub") == 0
        assert channel.store.inflight_counts() == {"hub": 0}


def test_nothing_is_sent_on_the_connection_pinned_for_brpop(prefix: str) -> None:
    """Given a consumer whose BRPOP is pending, when the same channel publishes, gets, acks and
    declares, expect the right answers, nothing but BRPOP on the pinned connection, and the next
    message delivered."""
    with connect(prefix) as connection:
        channel = channel_of(connection)
        consumed, other = Queue("consumed"), Queue("other")
        consumed(channel).declare()
        other(channel).declare()
        received: list[Any] = []
        producer = Producer(channel, serializer="json")
        with Consumer(channel, [consumed], callbacks=[lambda body, m: received.append(m)], prefetch_count=10):
            for n in range(3):
                producer.publish(n, routing_key="consumed")
            drain_until(connection, lambda: len(received) == 3)
            connection.transport.cycle.on_poll_start()  # the next BRPOP goes out
            assert channel._in_poll
            pinned = channel.client.connection
            sent: list[str] = []
            send = pinned.send_command

            def recording(*args: Any, **kwargs: Any) -> Any:
                sent.append(str(args[0]))
                return send(*args, **kwargs)

            pinned.send_command = recording
            for message in received:
                message.ack()
            for n in range(5):
                producer.publish(n, routing_key="other")
            got = other(channel).get(no_ack=False)
            assert got is not None and got.payload == 0
            got.ack()
            assert other(channel).queue_declare(passive=True).message_count == 4
            producer.publish("next", routing_key="consumed")
            drain_until(connection, lambda: len(received) == 4)
            assert [m.payload for m in received] == [0, 1, 2, "next"]
            received[-1].ack()
            assert set(sent) <= {"BRPOP"}
        assert channel.store.inflight_counts() == {"consumed": 0, "other": 0}


def test_fanout_reaches_every_drain_events_consumer(prefix: str) -> None:
    exchange = Exchange("broadcast", type="fanout")
    with connect(prefix) as one, connect(prefix) as two, connect(prefix) as publisher:
        got: dict[str, list[Any]] = {"one": [], "two": []}
        for name, connection in (("one", one), ("two", two)):
            Consumer(connection, [Queue(f"broadcast-{name}", exchange)], no_ack=True, accept=["json"],
                     callbacks=[lambda body, message, name=name: got[name].append(body)]).consume()
        subscribe(one, two)
        Producer(publisher, exchange=exchange).publish({"n": 1}, declare=[exchange], serializer="json")
        drain_until(one, lambda: bool(got["one"]))
        drain_until(two, lambda: bool(got["two"]))
    assert got == {"one": [{"n": 1}], "two": [{"n": 1}]}


def test_queue_delete_removes_its_bindings(prefix: str, server: redis.Redis) -> None:
    """Given a queue bound to an exchange, when it is deleted (by this connection, or by another
    one that does not know the binding), expect publishes through the exchange to succeed and
    the binding gone."""
    exchange = Exchange("routes", type="direct")
    queue = Queue("routed", exchange, routing_key="key")
    with connect(prefix) as connection, connect(prefix) as other:
        channel = channel_of(connection)
        table = channel.namespace.binding("routes")
        queue(channel).declare()
        assert server.zcard(table) == 1
        queue(channel).delete()
        assert server.zcard(table) == 0
        producer = Producer(channel, exchange=exchange)
        producer.publish("dropped", routing_key="key")

        queue(channel).declare()
        other.default_channel.queue_delete("routed")
        assert server.zcard(table) == 1  # the other connection did not know it
        producer.publish("dropped", routing_key="key")
        assert server.zcard(table) == 0
        with pytest.raises(NotFound):
            Producer(channel).publish("to a missing queue", routing_key="routed")


def test_cancelling_one_of_two_consumers_leaves_the_other_working(prefix: str) -> None:
    with connect(prefix) as connection:
        channel = channel_of(connection)
        first, second = Queue("first"), Queue("second")
        got: list[str] = []
        consumers = [Consumer(connection, [queue], callbacks=[keep_and_ack(got)], accept=["json"])
                     for queue in (first, second)]
        for consumer in consumers:
            consumer.consume()
        drain_until(connection, lambda: False, timeout=0.3)  # BRPOP pending on both
        consumers[0].cancel()
        producer = Producer(channel, serializer="json")
        producer.publish("to first", routing_key="first")
        producer.publish("to second", routing_key="second")
        drain_until(connection, lambda: bool(got), timeout=3)
        drain_until(connection, lambda: len(got) > 1, timeout=1.5)
        assert got == ["to second"]
        assert channel.store.count("first") == 1


def test_producer_batch_defers_fanout_and_queue_messages_until_it_ends(prefix: str) -> None:
    exchange = Exchange("batched", type="fanout")
    with connect(prefix) as one, connect(prefix) as two, connect(prefix) as publisher:
        got: dict[str, list[Any]] = {"one": [], "two": []}
        for name, connection in (("one", one), ("two", two)):
            Consumer(connection, [Queue(f"batched-{name}", exchange)], no_ack=True, accept=["json"],
                     callbacks=[lambda body, message, name=name: got[name].append(body)]).consume()
        subscribe(one, two)
        channel = channel_of(publisher)
        Queue("direct")(channel).declare()
        producer = Producer(channel, serializer="json")
        with producer.batch():
            producer.publish(1, exchange=exchange, declare=[exchange])
            producer.publish(2, exchange=exchange)
            producer.publish("direct", routing_key="direct")
            drain_until(one, lambda: False, timeout=0.3)
            assert got["one"] == [] and channel.store.count("direct") == 0
        drain_until(one, lambda: len(got["one"]) == 2)
        drain_until(two, lambda: len(got["two"]) == 2)
        assert got == {"one": [1, 2], "two": [1, 2]}
        assert channel.store.count("direct") == 1


def test_global_keyprefix_tenants_share_nothing(prefix: str, server: redis.Redis) -> None:
    other_prefix = f"{prefix}other:"
    exchange = Exchange("news", type="fanout")
    with connect(prefix) as tenant, connect(other_prefix) as neighbour:
        Queue("jobs")(tenant.default_channel).declare()
        Queue("jobs", max_priority=5)(neighbour.default_channel).declare()  # no 406: another queue
        Producer(tenant, serializer="json").publish("mine", routing_key="jobs")
        assert channel_of(neighbour).store.count("jobs") == 0
        assert Queue("jobs")(neighbour.default_channel).get() is None
        heard: list[Any] = []
        Consumer(neighbour, [Queue("news-neighbour", exchange)], no_ack=True, accept=["json"],
                 callbacks=[lambda body, message: heard.append(body)]).consume()
        subscribe(neighbour)
        Producer(tenant, exchange=exchange, serializer="json").publish("news", declare=[exchange])
        drain_until(neighbour, lambda: bool(heard), timeout=1)
        assert heard == []
        message = Queue("jobs")(tenant.default_channel).get(no_ack=True)
        assert message is not None and message.payload == "mine"
    mine, theirs = channel_of(tenant).namespace.queue("jobs"), channel_of(neighbour).namespace.queue("jobs")
    assert mine.meta.startswith(prefix) and theirs.meta.startswith(other_prefix)
    assert server.hget(mine.meta, "type") == b"fifo" and server.hget(theirs.meta, "type") == b"priority"


def test_without_global_keyprefix_every_key_is_under_the_prefix_option(prefix: str, server: redis.Redis) -> None:
    """Kombu's default (no ``global_keyprefix``): the transport option ``prefix`` roots the keys."""
    root = prefix.rstrip(":")
    exchange = Exchange("plain", type="direct")
    with kombu.Connection(REDIS_URL, transport="mindtrace-redis", transport_options={"prefix": root}) as connection:
        channel = channel_of(connection)
        assert channel.namespace.root == root
        got: list[Any] = []
        with Consumer(connection, [Queue("plain", exchange, routing_key="plain")], callbacks=[keep_and_ack(got)],
                      accept=["json"]):
            Producer(connection, exchange=exchange, serializer="json").publish("routed", routing_key="plain")
            drain_until(connection, lambda: bool(got))
        assert got == ["routed"]
        assert server.exists(f"{root}:q:{{plain}}:meta", f"{root}:binding:plain", f"{root}:queues") == 3


@pytest.mark.parametrize("name", ["mindtrace.unacked", "mindtrace.seq", "mindtrace.queues", "_kombu.binding.x",
                                  "unacked", "mindtrace:queues", "mindtrace:q:{x}:meta", "q}{%7B"])
def test_queue_names_that_look_internal_are_ordinary_queues(prefix: str, name: str) -> None:
    neighbour = "mindtrace.queues" if name != "mindtrace.queues" else "mindtrace.seq"
    with connect(prefix) as connection:
        channel = channel_of(connection)
        for queue in (name, neighbour):
            Queue(queue)(channel).declare()
            Producer(channel, serializer="json").publish(queue, routing_key=queue)
        assert {spec.name for spec in channel.store.specs()} == {name, neighbour}
        assert channel.store.count(name) == 1
        message = Queue(name)(channel).get(no_ack=False)
        assert message is not None and message.payload == name
        message.ack()
        assert (channel.store.count(name), channel.store.count(neighbour)) == (0, 1)


def test_x_expires_is_honoured_and_renewed(prefix: str, server: redis.Redis) -> None:
    """Given ``Queue(expires=1)`` bound to an exchange, expect its keys and binding to expire
    with it, publishes and consumers to renew it, and publishes after expiry to raise 404."""
    exchange = Exchange("expiring", type="direct")
    queue = Queue("short", exchange, routing_key="short", expires=1)
    lasting = Queue("long", exchange, routing_key="long")
    with connect(prefix) as connection, connect(prefix) as unaware:
        channel = channel_of(connection)
        keys = channel.namespace.queue("short")
        queue(channel).declare()
        lasting(channel).declare()
        assert 0 < server.pttl(keys.meta) <= 1000
        table = channel.namespace.binding("expiring")
        assert server.zscore(table, "long\x06\x16\x06\x16long") == float("inf")
        assert 0 < (server.zscore(table, "short\x06\x16\x06\x16short") or 0) < float("inf")

        time.sleep(0.6)
        Producer(unaware, serializer="json").publish("m", routing_key="short")  # knows no x-expires
        assert 0 < server.pttl(keys.ready) <= server.pttl(keys.meta) + 5
        Producer(channel, serializer="json").publish("m", routing_key="short")
        assert server.pttl(keys.meta) > 800  # renewed by a publish of a channel that declared it

        consumer = Consumer(connection, [queue], callbacks=[], accept=["json"])
        consumer.consume()
        assert server.pttl(keys.meta) > 2000  # consumed: lives as long as its binding
        time.sleep(1.3)
        assert channel.queue_spec("short") is not None
        consumer.cancel()
        assert 0 < server.pttl(keys.meta) <= 1000
        time.sleep(1.3)
        assert channel.queue_spec("short") is None
        assert server.exists(*keys.all()) == 0
        with pytest.raises(NotFound):
            Producer(channel).publish("late", routing_key="short")
        Producer(channel, exchange=exchange).publish("late", routing_key="short")  # dropped with the binding


@pytest.mark.parametrize("how", ["basic_get", "consumer"])
def test_closed_channel_returns_its_messages_first_in_line_in_order(prefix: str, how: str) -> None:
    with connect(prefix) as connection:
        queue = Queue("held")
        queue(connection.default_channel).declare()
        producer = Producer(connection, serializer="json")
        for n in range(1, 6):
            producer.publish(n, routing_key="held")
        holder = connection.channel()
        if how == "basic_get":
            held = [queue(holder).get(no_ack=False) for _ in range(3)]
        else:
            held = []
            Consumer(holder, [queue], callbacks=[lambda body, m: held.append(m)], prefetch_count=3).consume()
            drain_until(connection, lambda: len(held) == 3)
        assert [message.payload for message in held] == [1, 2, 3]
        holder.close()
        reader = connection.channel()
        again = [queue(reader).get(no_ack=True) for _ in range(5)]
        assert [m.payload for m in again] == [1, 2, 3, 4, 5]
        assert [bool(m.delivery_info.get("redelivered")) for m in again] == [True] * 3 + [False] * 2
        assert queue(reader).get() is None


HOLDER = """
import sys, kombu
import mindtrace_kombu  # registers the mindtrace-redis alias
url, prefix = sys.argv[1], sys.argv[2]
held = []
with kombu.Connection(url, transport="mindtrace-redis",
                      transport_options={"global_keyprefix": prefix, "lease_timeout": 2}) as connection:
    kombu.Consumer(connection, [kombu.Queue("jobs")], prefetch_count=3,
                   callbacks=[lambda body, message: held.append(body)], accept=["json"]).consume()
    while len(held) < 3:
        connection.drain_events(timeout=10)
    print("held", held, flush=True)
    sys.stdin.read()
"""


def test_messages_of_a_killed_consumer_return_after_its_lease_timeout(prefix: str) -> None:
    """Given a process holding 3 unacknowledged messages with ``lease_timeout=2``, when it is
    killed, expect them back in their original order, first in line, once its lease has expired
    (at least 2 s after its last renewal, which is at most 2/3 s before the kill), not before."""
    with connect(prefix) as connection:
        channel = channel_of(connection)
        Queue("jobs")(channel).declare()
        producer = Producer(connection, serializer="json")
        for n in range(1, 5):
            producer.publish(n, routing_key="jobs")
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, REDIS_URL, prefix],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held [1, 2, 3]"
            time.sleep(0.5)  # a heartbeat or two
            os.kill(holder.pid, signal.SIGKILL)
            killed = time.monotonic()
        finally:
            holder.kill()
            holder.wait()
        assert channel.store.count("jobs") == 1
        time.sleep(max(0.0, killed + 1.2 - time.monotonic()))
        assert channel.store.count("jobs") == 1  # their lease has not expired yet
        while channel.store.count("jobs") < 4:
            assert time.monotonic() - killed < 5, "the killed consumer's messages did not return"
            time.sleep(0.05)
        returned = [Queue("jobs")(channel).get(no_ack=True) for _ in range(4)]
        assert [m.payload for m in returned] == [1, 2, 3, 4]
        assert [bool(m.delivery_info.get("redelivered")) for m in returned] == [True, True, True, False]


def test_a_short_lease_consumer_leaves_other_consumers_messages_alone(prefix: str) -> None:
    """Given a consumer (lease 30 s) holding two messages, expect a busy consumer with a 1 s
    lease to get only the third, for 3 s, and the first consumer's acks to settle its own."""
    with connect(prefix, lease_timeout=30) as patient, connect(prefix, lease_timeout=1) as hasty:
        queue = Queue("shared")
        queue(patient.default_channel).declare()
        producer = Producer(patient, serializer="json")
        for n in range(1, 4):
            producer.publish(n, routing_key="shared")
        held = [queue(patient.default_channel).get(no_ack=False) for _ in range(2)]
        got: list[int] = []
        with Consumer(hasty, [queue], callbacks=[keep_and_ack(got)], accept=["json"]):
            drain_until(hasty, lambda: False, timeout=3.0)
        assert got == [3]
        store = channel_of(patient).store
        assert store.inflight_counts() == {"shared": 2}
        for message in held:
            message.ack()
        assert store.inflight_counts() == {"shared": 0} and store.count("shared") == 0


def test_stored_data_that_is_no_kombu_message_is_delivered_as_unparseable(prefix: str) -> None:
    with connect(prefix) as connection:
        channel = channel_of(connection)
        Queue("raw")(channel).declare()
        channel.store.put("raw", [(b"\x00not json", 0), (b'{"properties": {"body_encoding": "base64"}, "body": "%%"}', 0)])
        got: list[Any] = []
        with Consumer(connection, [Queue("raw")], on_message=got.append):
            drain_until(connection, lambda: len(got) == 2)
        assert [(m.content_type, m.body) for m in got] == [
            (UNPARSEABLE_CONTENT_TYPE, b"\x00not json"),
            (UNPARSEABLE_CONTENT_TYPE, b'{"properties": {"body_encoding": "base64"}, "body": "%%"}'),
        ]
        for message in got:
            message.ack()
        assert channel.store.inflight_counts() == {"raw": 0}


def test_payloads_are_the_wire_format_both_ways(prefix: str) -> None:
    """A Kombu publish stores what ``wire.encode_payload`` produces, and a payload encoded by
    it is consumed by Kombu as the message it describes."""
    with connect(prefix) as connection:
        channel = channel_of(connection)
        Queue("wire", max_priority=9)(channel).declare()
        Producer(channel).publish(b"\x01body", routing_key="wire", priority=3, content_type="application/x-test",
                                  content_encoding="binary", headers={"h": 1})
        stored = channel.store.get("wire")
        assert stored is not None
        published = loads(stored.payload)
        expected = encode_payload(WireMessage(b"\x01body", "application/x-test", "binary", {"h": 1}),
                                  "", "wire", 3, published["properties"]["delivery_tag"])
        assert published == expected
        channel.store.put("wire", [(dumps(expected), 3)])
        message = Queue("wire")(channel).get(no_ack=True)
        assert (message.body, message.content_type, message.headers, message.properties["priority"]) == (
            b"\x01body", "application/x-test", {"h": 1}, 3)


def test_priorities_are_exact_higher_first_and_capped(prefix: str) -> None:
    with connect(prefix) as connection:
        queue = Queue("ranked", max_priority=5)
        queue(connection.default_channel).declare()
        producer = Producer(connection, serializer="json")
        for body, priority in [("low", 1), ("over", 9), ("top", 5), ("mid", 3), ("none", 0)]:
            producer.publish(body, routing_key="ranked", priority=priority)
        got = [queue(connection.default_channel).get(no_ack=True).payload for _ in range(5)]
        assert got == ["over", "top", "mid", "low", "none"]


def test_declarations_and_missing_queues_answer_like_rabbitmq(prefix: str) -> None:
    with connect(prefix) as connection:
        channel = connection.default_channel
        Queue("typed")(channel).declare()
        with pytest.raises(PreconditionFailed):
            Queue("typed", max_priority=10)(channel).declare()
        calls: list[Callable[[], Any]] = [
                     lambda: Queue("missing")(channel).queue_declare(passive=True),
                     lambda: Queue("missing")(channel).get(),
                     lambda: Producer(channel).publish("x", routing_key="missing")]
        for call in calls:
            with pytest.raises(NotFound):
                call()
        channel.queue_delete("missing")  # nothing to delete: no error, as on RabbitMQ


class _Blackhole:
    """A TCP proxy to Redis whose open connections can silently stop passing bytes."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=({client: server, server: client},), daemon=True).start()

    def _pump(self, peers: dict[socket.socket, socket.socket]) -> None:
        while True:
            try:
                readable = select.select(list(peers), [], [], 0.1)[0]
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if not self.frozen.is_set():
                        peers[sock].sendall(data)
            except (OSError, ValueError):
                return

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def test_drain_events_timeout_holds_on_a_half_open_connection(prefix: str) -> None:
    """Given a consumer whose connection goes half-open and no ``socket_timeout``, expect
    ``drain_events(timeout=1)`` to raise ``socket.timeout`` in about a second."""
    url = urlparse(REDIS_URL)
    proxy = _Blackhole((url.hostname or "localhost", url.port or 6379))
    try:
        connection = kombu.Connection(f"redis://127.0.0.1:{proxy.port}{url.path}", transport="mindtrace-redis",
                                      transport_options={"global_keyprefix": prefix})
        Queue("quiet")(connection.default_channel).declare()
        Consumer(connection, [Queue("quiet")], callbacks=[]).consume()
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.2)
        proxy.frozen.set()
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=1)
        assert time.monotonic() - started < 3
    finally:
        proxy.close()
        try:
            connection.release()
        except Exception:  # noqa: BLE001 - its sockets were closed under it
            pass


def test_the_sentinel_channel_reads_both_transports_options() -> None:
    options = set(sentinel.Channel.from_transport_options)
    assert {"master_name", "sentinel_fanout_compat", "lease_timeout", "prefix", "global_keyprefix"} <= options
    assert set(kombu_redis.SentinelChannel.from_transport_options) <= options
