"""RabbitMQ connections that fail in flight: silently (traffic blackholed, sockets kept open) or
abruptly (reset). The faults are caused by :class:`Proxy`, a TCP proxy of this test in front of
the local RabbitMQ; the broker itself is never touched.

Heartbeats find a silent connection; a blocking read on one gives up after two intervals; a
publish waits for its confirms at most ``confirm_timeout``; a job that outlasts the heartbeat
interval keeps its connection; a settlement on a lost connection raises ``BrokerUnavailable``.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator

import kombu
import pytest

from mindtrace_kombu import (
    BrokerUnavailable,
    InvalidArgument,
    Orchestrator,
    PublishNotConfirmed,
    RabbitMQClient,
    client_from_url,
)
from mindtrace_kombu.worker import JobEvent, Worker

from .conftest import AMQP_URL, make_client, make_job, unique

pytestmark = pytest.mark.timeout(90)

AMQP = kombu.Connection(AMQP_URL)


class _Link:
    """One proxied connection: a thread per direction copies bytes, or drops them once silent."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.silent = threading.Event()
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._copy, args=(source, sink), daemon=True).start()

    def _copy(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if self.silent.is_set():
                if not data:
                    return  # the other side gave up; this side keeps its socket open, silent
                continue
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return

    def reset(self) -> None:
        """Close both sides; the client's with a TCP reset."""
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class Proxy:
    """A TCP proxy on a loopback port in front of RabbitMQ. :meth:`blackhole` silences the
    connections open now (bytes dropped both ways, sockets kept open); :meth:`reset` resets
    them. Connections made afterwards are forwarded."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._links: list[_Link] = []
        self._changed = threading.Condition()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            link = _Link(client, socket.create_connection(self._target))
            with self._changed:
                self._links.append(link)
                self.accepted += 1
                self._changed.notify_all()

    def url(self) -> str:
        return f"amqp://{AMQP.userid}:{AMQP.password}@127.0.0.1:{self.port}/{AMQP.virtual_host}"

    def wait_accepted(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.accepted >= count, timeout)

    def blackhole(self) -> None:
        with self._changed:
            for link in self._links:
                link.silent.set()

    def reset(self) -> None:
        with self._changed:
            links, self._links = self._links, []
        for link in links:
            link.reset()

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self._listener.close()
        with self._changed:
            links, self._links = self._links, []
        for link in links:
            link.close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    make_client("rabbitmq")
    front = Proxy((AMQP.hostname if AMQP.hostname != "localhost" else "127.0.0.1", AMQP.port or 5672))
    yield front
    front.close()


@pytest.fixture
def direct() -> Iterator[Orchestrator]:
    """An orchestrator straight to RabbitMQ; deletes the queues it declared."""
    make_client("rabbitmq")
    orchestrator = Orchestrator(RabbitMQClient(url=AMQP_URL))
    yield orchestrator
    for name in list(orchestrator._specs):
        orchestrator.delete_queue(name)
    orchestrator.close()


def test_heartbeat_and_confirm_timeout_from_arguments_or_the_url() -> None:
    make_client("rabbitmq")
    default = RabbitMQClient(url=AMQP_URL)
    from_url = client_from_url(f"{AMQP_URL}?heartbeat=7&confirm_timeout=2.5")
    off = RabbitMQClient(url=AMQP_URL, heartbeat=0, confirm_timeout=None)
    assert isinstance(from_url, RabbitMQClient)
    assert (default.heartbeat, default.confirm_timeout) == (60, 30.0)
    assert (from_url.heartbeat, from_url.confirm_timeout) == (7, 2.5)
    assert (off.heartbeat, off.confirm_timeout) == (0, None)
    for bad in (lambda: RabbitMQClient(url=AMQP_URL, heartbeat=1.5), lambda: client_from_url(f"{AMQP_URL}?confirm_timeout=soon")):
        with pytest.raises(InvalidArgument):
            bad()
    # the broker (60 s by default) agrees to the client's interval, or to none
    for client, negotiated in ((from_url, 7), (off, 0)):
        with client.kombu_connection() as connection:
            connection.connect()
            assert connection.connection.heartbeat == negotiated


def test_a_worker_notices_a_silent_connection_and_reconnects(proxy: Proxy, direct: Orchestrator) -> None:
    # Given a worker consuming through the proxy with 2 s heartbeats, that has run a job
    name = unique("silent")
    direct.declare_queue(name)
    events: queue.Queue[JobEvent] = queue.Queue()
    orchestrator = Orchestrator(RabbitMQClient(url=proxy.url(), heartbeat=2, connect_timeout=3))
    worker = Worker(orchestrator, name, lambda job: None, on_event=events.put)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    first = make_job(1)
    direct.publish(name, first)
    assert events.get(timeout=15).outcome == "completed"
    try:
        # When its connections go silent (nothing forwarded, nothing closed)
        connections = proxy.accepted
        proxy.blackhole()
        silenced = time.monotonic()
        # Expect it to notice within 2.5 intervals (two missed, checked every half interval)
        # and, after the worker's backoff (0.4 s), to connect again through the proxy
        assert proxy.wait_accepted(connections + 1, timeout=30), "the worker never reconnected"
        reconnected = time.monotonic() - silenced
        assert reconnected < 2.5 * 2 + 3, f"reconnected after {reconnected:.1f}s"
        # And to run a job published afterwards
        # (the first job may run once more: its ack can be lost in the proxy when it goes
        # silent, and at least once allows that)
        job = make_job(2)
        direct.publish(name, job)
        event = events.get(timeout=15)
        if event.job_id == first.id:
            event = events.get(timeout=15)
        assert (event.job_id, event.outcome) == (job.id, "completed")
    finally:
        worker.stop()
        thread.join(timeout=15)
        orchestrator.close()
    assert not thread.is_alive()


def test_a_publish_waits_for_confirms_at_most_confirm_timeout(proxy: Proxy, direct: Orchestrator) -> None:
    # Given a publisher through the proxy, with a 1 s confirm timeout and no retries
    name = unique("confirm")
    direct.declare_queue(name)
    orchestrator = Orchestrator(
        RabbitMQClient(url=proxy.url(), heartbeat=0, confirm_timeout=1), connection_retries=0
    )
    try:
        orchestrator.publish(name, make_job(1))
        # When its connection goes silent before the next publish
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(PublishNotConfirmed) as info:
            orchestrator.publish(name, make_job(2))
        # Expect PublishNotConfirmed (a BrokerUnavailable, reason timeout) after about 1 s,
        # saying the message may or may not be there
        assert 1 <= time.monotonic() - started < 5
        assert isinstance(info.value, BrokerUnavailable) and info.value.reason == "timeout"
        assert info.value.unconfirmed == 1 and "may or may not be on the queue" in str(info.value)
        # And the next publish on a new connection (forwarded) to work
        orchestrator.publish(name, make_job(3))
        assert direct.count_queue_messages(name) == 2
    finally:
        orchestrator.close()


def test_a_kombu_batch_waits_for_confirms_at_most_its_confirm_timeout(proxy: Proxy, direct: Orchestrator) -> None:
    # Given a Kombu producer on this package's transport, through the proxy
    name = unique("batch")
    direct.declare_queue(name)
    connection = RabbitMQClient(url=proxy.url(), heartbeat=0).kombu_connection()
    try:
        producer = kombu.Producer(connection.default_channel, serializer="json")
        with producer.batch():
            producer.publish(1, routing_key=name, confirm_timeout=1)
        # When the connection goes silent, Expect the batch's flush to raise socket.timeout
        # after the publishes' confirm_timeout, as py-amqp's confirm_timeout does
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(socket.timeout), producer.batch():
            producer.publish(2, routing_key=name, confirm_timeout=1)
        assert 1 <= time.monotonic() - started < 5
    finally:
        connection.collect()  # no close handshake on a silent connection
    assert direct.count_queue_messages(name) == 1


def test_a_request_on_a_silent_connection_gives_up_after_two_heartbeats(
    proxy: Proxy, direct: Orchestrator
) -> None:
    name = unique("rpc")
    direct.declare_queue(name)
    orchestrator = Orchestrator(RabbitMQClient(url=proxy.url(), heartbeat=1), connection_retries=0)
    try:
        assert orchestrator.count_queue_messages(name) == 0
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            orchestrator.count_queue_messages(name)
        assert time.monotonic() - started < 5 and info.value.reason in ("timeout", "heartbeat")
    finally:
        orchestrator.close()


def test_a_job_longer_than_the_heartbeat_keeps_its_connection(direct: Orchestrator) -> None:
    # Given jobs taken with 1 s heartbeats, by a consumer and with claim-style take(ack=True)
    name = unique("long")
    direct.declare_queue(name)
    direct.publish_many(name, [make_job(1), make_job(2)])
    orchestrator = Orchestrator(RabbitMQClient(url=AMQP_URL, heartbeat=1), connection_retries=0)
    try:
        consumer = orchestrator.backend.consumer([name], prefetch=1)
        [consumed] = consumer.fetch(1, timeout=5)
        taken = orchestrator.take(name, 5, ack=True)
        assert taken is not None
        # When their handlers run for four heartbeat intervals without touching the broker
        time.sleep(4)  # the job's own duration, not a wait for something to happen
        # Expect both acknowledgements to land: the broker kept the connections
        consumed.ack()
        taken.ack()
        assert consumer.fetch(1, timeout=0.5) == []
        consumer.close()
        assert direct.count_queue_messages(name) == 0
    finally:
        orchestrator.close()


def test_a_settlement_on_a_reset_connection_raises_broker_unavailable(proxy: Proxy, direct: Orchestrator) -> None:
    # Given a job taken through the proxy by a consumer, and one taken with take(ack=True)
    name = unique("reset")
    direct.declare_queue(name)
    direct.publish_many(name, [make_job(1), make_job(2)])
    orchestrator = Orchestrator(RabbitMQClient(url=proxy.url(), heartbeat=0), connection_retries=0)
    try:
        consumer = orchestrator.backend.consumer([name], prefetch=1)
        [consumed] = consumer.fetch(1, timeout=5)
        taken = orchestrator.take(name, 5, ack=True)
        assert taken is not None
        # When the connections are reset
        proxy.reset()
        # Expect each acknowledgement to raise BrokerUnavailable, never py-amqp's or a socket
        # error -- or, when the kernel still took the frame before the reset arrived, to be lost
        # with the connection -- and both jobs back on the queue for another consumer
        for delivery in (consumed, taken):
            try:
                delivery.ack()
            except BrokerUnavailable as exc:
                assert exc.reason == "closed"
        consumer.close()
        deadline = time.monotonic() + 30
        while direct.count_queue_messages(name) != 2:
            assert time.monotonic() < deadline, "the broker did not requeue the jobs of the reset connections"
            time.sleep(0.05)  # the broker requeues when it sees the connections close
    finally:
        orchestrator.close()
    # And the broker to deliver both again
    deadline = time.monotonic() + 10
    while direct.count_queue_messages(name) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the broker requeues when it sees the connections close
    assert direct.count_queue_messages(name) == 2
