"""Publishing modes: confirmed (the default) and unconfirmed (Celery's guarantee), per
orchestrator and per call, on every backend; the RabbitMQ specifics below."""

from __future__ import annotations

import threading
from typing import Any

import kombu
import pytest

from mindtrace_kombu import InvalidArgument, Orchestrator, QueueNotFound
from mindtrace_kombu.backends.amqp import AmqpBackend
from mindtrace_kombu.backends.base import WireMessage
from mindtrace_kombu.clients import Client, RabbitMQClient
from mindtrace_kombu.queues import QueueSpec
from mindtrace_kombu.serialization import ACCEPT

from .conftest import AMQP_URL, make_client, make_job, unique

pytestmark = pytest.mark.timeout(60)


def drain(orchestrator: Orchestrator, queue: str, n: int) -> list[int]:
    """Receive ``n`` jobs (an unconfirmed publish may still be on its way: wait for each)."""
    jobs = [orchestrator.receive_message(queue, timeout=10) for _ in range(n)]
    assert all(job is not None for job in jobs)
    return [job.payload.input.value for job in jobs]  # type: ignore[union-attr]


@pytest.mark.parametrize("per_call", [True, False])
def test_unconfirmed_publishing_delivers_every_job_in_order(
    client: Client, queue_name: str, per_call: bool
) -> None:
    """Given an orchestrator confirming by default (per_call) or one made with
    confirm_publish=False
    When jobs are published one by one and in a batch without confirms
    Expect every job delivered once, in publish order, and nothing more"""
    orchestrator = Orchestrator(client) if per_call else Orchestrator(client, confirm_publish=False)
    options: dict[str, Any] = {"confirm": False} if per_call else {}
    try:
        orchestrator.declare_queue(queue_name)
        for value in range(5):
            orchestrator.publish(queue_name, make_job(value), **options)
        orchestrator.publish_many(queue_name, [make_job(value) for value in range(5, 20)], **options)

        assert drain(orchestrator, queue_name, 20) == list(range(20))
        assert orchestrator.receive_message(queue_name) is None
    finally:
        orchestrator.delete_queue(queue_name)
        orchestrator.close()


@pytest.mark.parametrize("value", ["no", 0, 1.0])
def test_confirm_must_be_a_bool(orchestrator: Orchestrator, queue_name: str, value: object) -> None:
    """Expect InvalidArgument naming the option, and nothing published"""
    orchestrator.declare_queue(queue_name)
    with pytest.raises(InvalidArgument, match="confirm"):
        orchestrator.publish(queue_name, make_job(), confirm=value)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="confirm_publish"):
        Orchestrator(orchestrator.client, confirm_publish=value)  # type: ignore[arg-type]
    assert orchestrator.count_queue_messages(queue_name) == 0


def test_confirmed_publishing_from_many_threads_counts_exactly(orchestrator: Orchestrator, queue_name: str) -> None:
    """Given 8 threads sharing one orchestrator
    When each publishes 25 jobs with confirms (the default)
    Expect the count exact as soon as every thread returned"""
    orchestrator.declare_queue(queue_name)

    def publish() -> None:
        for value in range(25):
            orchestrator.publish(queue_name, make_job(value))

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert orchestrator.count_queue_messages(queue_name) == 200


# -- RabbitMQ ----------------------------------------------------------------------------------------


@pytest.fixture
def rabbitmq() -> RabbitMQClient:
    client = make_client("rabbitmq")
    assert isinstance(client, RabbitMQClient)
    return client


def test_rabbitmq_unconfirmed_publish_to_a_deleted_queue_is_not_reported_and_leaves_no_trace(
    rabbitmq: RabbitMQClient,
) -> None:
    """Given a queue the orchestrator has looked up, deleted behind its back
    When a job is published to it without confirms, then with confirms
    Expect the unconfirmed publish to return (Celery's guarantee: it is dropped unreported),
    the confirmed one to raise QueueNotFound, and the session to keep publishing to other queues
    (no stray return or confirm of the unconfirmed publish read by a later publish)"""
    gone, other = unique("gone"), unique("other")
    orchestrator, elsewhere = Orchestrator(rabbitmq), Orchestrator(rabbitmq)
    try:
        orchestrator.declare_queue(gone)
        orchestrator.declare_queue(other)
        elsewhere.delete_queue(gone)

        orchestrator.publish(gone, make_job(), confirm=False)
        with pytest.raises(QueueNotFound):
            orchestrator.publish(gone, make_job(1))
        orchestrator.publish(other, make_job(2))
        orchestrator.publish(other, make_job(3), confirm=False)
        assert drain(orchestrator, other, 2) == [2, 3]
    finally:
        orchestrator.delete_queue(other)
        orchestrator.close()
        elsewhere.close()


def test_rabbitmq_unconfirmed_publishes_wait_for_nothing(rabbitmq: RabbitMQClient) -> None:
    """Given a backend session that has published before
    When 200 messages are published without confirms
    Expect no wait for the broker (py-amqp's non-blocking look for a connection.blocked frame
    before each publish aside), and all 200 on the queue afterwards"""
    name = unique("unconfirmed")
    connections: list[kombu.Connection] = []

    def connection() -> kombu.Connection:
        connections.append(rabbitmq.kombu_connection())
        return connections[-1]

    backend = AmqpBackend(connection, url=rabbitmq.url)
    unconfirmed = backend.unconfirmed()
    message = WireMessage(b'{"n": 1}', "application/json", "utf-8")
    try:
        backend.declare(QueueSpec(name))
        unconfirmed.publish(name, [message], None)  # opens the session's second channel
        raw = connections[0].connection
        reads = 0
        original = raw.blocking_read

        def counted(timeout: float | None = None) -> Any:
            nonlocal reads
            reads += timeout != 0
            return original(timeout)

        raw.blocking_read = counted
        unconfirmed.publish(name, [message] * 200, None)
        assert reads == 0
        raw.blocking_read = original
        assert unconfirmed is backend.unconfirmed()
        backend.publish(name, [message], None)  # confirmed: all before it are on the queue
        assert backend.count(name) == 202
    finally:
        backend.delete(name)
        backend.close()


def test_rabbitmq_stock_kombu_consumer_reads_unconfirmed_jobs() -> None:
    """Given a job published without confirms by an orchestrator built from a URL
    Expect a plain Kombu consumer to decode it as the job (the same Kombu message)"""
    make_client("rabbitmq")  # skips, or fails under MINDTRACE_REQUIRE_BROKERS=1, when unreachable
    name = unique("kombu-reads")
    orchestrator = Orchestrator.from_url(AMQP_URL, confirm_publish=False)
    received: list[Any] = []
    try:
        orchestrator.declare_queue(name)
        job = make_job(7)
        orchestrator.publish(name, job)
        with kombu.Connection(AMQP_URL) as connection:
            queue = kombu.Queue(name, durable=True, no_declare=True)
            with connection.Consumer(queue, accept=ACCEPT, callbacks=[lambda body, message: (received.append(body), message.ack())]):
                connection.drain_events(timeout=10)
        assert [body.id for body in received] == [job.id]
    finally:
        orchestrator.delete_queue(name)
        orchestrator.close()
