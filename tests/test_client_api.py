"""The original Mindtrace jobs clients' API on this package's clients, on every backend, used as
the original's tests used it: declare, publish, count, receive, clean and delete on the client,
status dicts, priorities, exchanges on RabbitMQ (NotImplementedError elsewhere, as before), and
``client.connection.close()`` in teardown."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mindtrace_kombu import (
    ExchangeNotFound,
    InvalidArgument,
    Job,
    JobType,
    Orchestrator,
    QueueNotFound,
    UnsupportedOperation,
)
from mindtrace_kombu.clients import Client

from .conftest import make_client, make_job, unique

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(backend: str) -> Iterator[Client]:
    made = make_client(backend)
    yield made
    if made.connection:
        made.connection.close()


@pytest.fixture
def queue(client: Client) -> Iterator[str]:
    name = unique("client")
    yield name
    try:
        client.delete_queue(name)
    except QueueNotFound:
        pass


def job_named(name: str, job_type: JobType = JobType.DEFAULT) -> Job:
    job = make_job(job_type=job_type)
    job.payload.name = f"{name}_schema"
    return job


def test_declare_publish_count_receive_clean_delete(client: Client, queue: str) -> None:
    assert client.declare_queue(queue) == {"status": "success", "message": f"Queue '{queue}' declared successfully."}
    assert client.declare_queue(queue)["status"] == "success"  # again: nothing changes

    job = job_named("first")
    assert client.publish(queue, job) == job.id
    assert client.count_queue_messages(queue) == 1  # right after publish, no sleep, on every backend
    received = client.receive_message(queue)
    assert received is not None and received.id == job.id and received.payload.name == "first_schema"
    assert client.count_queue_messages(queue) == 0

    for number in range(3):
        client.publish(queue, job_named(f"job_{number}"))
    cleaned = client.clean_queue(queue)
    assert cleaned["status"] == "success" and "3 messages" in cleaned["message"]
    assert client.count_queue_messages(queue) == 0

    assert client.delete_queue(queue) == {"status": "success", "message": f"Deleted queue '{queue}'."}
    with pytest.raises(KeyError):  # QueueNotFound is a KeyError, as the original's was
        client.count_queue_messages(queue)


def test_priority_10_before_1_with_max_priority_255(client: Client, queue: str) -> None:
    client.declare_queue(queue, max_priority=255)
    client.publish(queue, job_named("low_priority", JobType.DATA_PROCESSING), priority=1)
    client.publish(queue, job_named("high_priority", JobType.OBJECT_DETECTION), priority=10)
    first = client.receive_message(queue)
    assert first is not None and first.payload.name == "high_priority_schema"
    assert first.job_type == JobType.OBJECT_DETECTION


def test_queues_are_isolated(client: Client, queue: str) -> None:
    other = unique("client-other")
    client.declare_queue(queue)
    client.declare_queue(other)
    try:
        client.publish(queue, job_named("only_here"))
        assert client.count_queue_messages(other) == 0
        assert client.receive_message(other) is None
        assert client.count_queue_messages(queue) == 1
    finally:
        client.delete_queue(other)


def test_receive_blocks_when_asked(client: Client, queue: str) -> None:
    client.declare_queue(queue)
    assert client.receive_message(queue, block=True, timeout=0.2) is None
    job = job_named("late")
    threading.Timer(0.2, client.publish, (queue, job)).start()
    received = client.receive_message(queue, block=True)  # no timeout: waits for the job
    assert received is not None and received.id == job.id


def test_an_orchestrator_on_the_client_sees_what_the_client_declared(client: Client, queue: str) -> None:
    client.declare_queue(queue)
    orchestrator = Orchestrator(client)
    job = job_named("shared", JobType.CLASSIFICATION)
    assert orchestrator.publish(queue, job) == job.id
    assert orchestrator.count_queue_messages(queue) == 1 == client.count_queue_messages(queue)
    received = orchestrator.receive_message(queue)
    assert received is not None and received.job_type == JobType.CLASSIFICATION
    orchestrator.close()


def test_connection_close_releases_and_the_client_reopens(client: Client, queue: str) -> None:
    client.declare_queue(queue)
    assert client.connection.is_open()
    client.connection.close()
    assert not client.connection.is_open()
    assert client.count_queue_messages(queue) == 0  # opens new connections


# -- exchanges ------------------------------------------------------------------------------------


@pytest.fixture
def rabbitmq_client() -> Iterator[Client]:
    made = make_client("rabbitmq")
    yield made
    made.connection.close()


@pytest.fixture
def exchange(rabbitmq_client: Client) -> Iterator[str]:
    name = unique("exchange")
    yield name
    try:
        rabbitmq_client.delete_exchange(name)
    except ExchangeNotFound:
        pass


def test_exchange_declare_count_delete(rabbitmq_client: Client, exchange: str) -> None:
    assert rabbitmq_client.count_exchanges(exchange=exchange) == 0
    assert rabbitmq_client.declare_exchange(exchange=exchange, exchange_type="direct")["status"] == "success"
    assert rabbitmq_client.declare_exchange(exchange=exchange, exchange_type="direct")["status"] == "success"
    assert rabbitmq_client.count_exchanges(exchange=exchange) == 1
    assert rabbitmq_client.delete_exchange(exchange=exchange)["status"] == "success"
    assert rabbitmq_client.count_exchanges(exchange=exchange) == 0
    with pytest.raises(ExchangeNotFound):
        rabbitmq_client.delete_exchange(exchange=exchange)


def test_queue_bound_to_a_direct_exchange_gets_what_is_published_through_it(
    rabbitmq_client: Client, exchange: str
) -> None:
    queue = unique("bound")
    rabbitmq_client.declare_exchange(exchange=exchange, exchange_type="direct")
    result = rabbitmq_client.declare_queue(queue, exchange=exchange, routing_key="test.key")
    assert result["status"] == "success" and exchange in result["message"]
    try:
        job = job_named("exchange_job")
        assert rabbitmq_client.publish(queue, job, exchange=exchange, routing_key="test.key") == job.id
        assert rabbitmq_client.count_queue_messages(queue) == 1
        received = rabbitmq_client.receive_message(queue)
        assert received is not None and received.payload.name == "exchange_job_schema"
        with pytest.raises(QueueNotFound):  # no queue is bound for this key: returned, not lost silently
            rabbitmq_client.publish(queue, job, exchange=exchange, routing_key="no.such.key")
    finally:
        rabbitmq_client.delete_queue(queue)


def test_topic_and_fanout_exchanges_route_to_every_matching_queue(rabbitmq_client: Client, exchange: str) -> None:
    fanout = unique("fanout")
    queues = [unique("topic-a"), unique("topic-b")]
    rabbitmq_client.declare_exchange(exchange, "topic")
    rabbitmq_client.declare_exchange(fanout, "fanout")
    try:
        rabbitmq_client.declare_queue(queues[0], exchange=exchange, routing_key="images.*")
        rabbitmq_client.declare_queue(queues[1], exchange=exchange, routing_key="#")
        for queue in queues:
            rabbitmq_client.operations.bind_queue(queue, fanout)
        rabbitmq_client.publish(queues[0], job_named("resize"), exchange=exchange, routing_key="images.resize")
        rabbitmq_client.publish(queues[1], job_named("audit"), exchange=exchange, routing_key="audit")
        rabbitmq_client.publish(queues[0], job_named("broadcast"), exchange=fanout, routing_key="")
        assert [rabbitmq_client.count_queue_messages(queue) for queue in queues] == [2, 3]
    finally:
        for queue in queues:
            rabbitmq_client.delete_queue(queue)
        rabbitmq_client.delete_exchange(fanout)


def test_binding_to_a_missing_exchange_declares_nothing(rabbitmq_client: Client) -> None:
    queue = unique("unbound")
    with pytest.raises(ExchangeNotFound):
        rabbitmq_client.declare_queue(queue, exchange=unique("missing"))
    with pytest.raises(QueueNotFound):
        rabbitmq_client.count_queue_messages(queue)


def test_bad_exchange_input_is_refused_before_the_broker(rabbitmq_client: Client, exchange: str) -> None:
    for call in (
        lambda: rabbitmq_client.declare_exchange(exchange, "lifo"),
        lambda: rabbitmq_client.declare_exchange(""),
        lambda: rabbitmq_client.declare_exchange("amq.mine"),
        lambda: rabbitmq_client.publish("q", make_job(), exchange=exchange, routing_key="x" * 300),
    ):
        with pytest.raises(InvalidArgument):
            call()
    assert rabbitmq_client.count_exchanges(exchange=exchange) == 0


@pytest.mark.parametrize("backend_name", ["local", "redis"])
def test_exchanges_raise_not_implemented_on_local_and_redis(backend_name: str) -> None:
    client = make_client(backend_name)
    queue = unique("no-exchange")
    calls = [
        lambda: client.declare_exchange(exchange="test_exchange"),
        lambda: client.delete_exchange(exchange="test_exchange"),
        lambda: client.count_exchanges(exchange="test_exchange"),
        lambda: client.declare_queue(queue, exchange="test_exchange"),
    ]
    for call in calls:
        with pytest.raises(NotImplementedError) as caught:
            call()
        assert isinstance(caught.value, UnsupportedOperation) and "exchanges" in str(caught.value)
    with pytest.raises(QueueNotFound):  # the refused declare created nothing
        client.count_queue_messages(queue)
    client.connection.close()
