"""Unit tests of the error tree (the README's "Errors"), password masking and ``client_from_url``.

Errors are produced by the real parts: an in-process broker, and clients pointed at a port
nothing listens on (bad input must be refused before that broker is ever tried).
"""

from __future__ import annotations

import logging
import socket

import pytest
from kombu.transport import pyamqp

from mindtrace_kombu import (
    BrokerError,
    BrokerUnavailable,
    ExchangeNotFound,
    InvalidPriority,
    InvalidQueueName,
    Job,
    JobDecodeError,
    JobInput,
    JobSchema,
    JobsError,
    LocalClient,
    MessageTooLarge,
    Orchestrator,
    PermissionDenied,
    PublishNotConfirmed,
    PublishRejected,
    QueueAlreadyExists,
    QueueArgumentsMismatch,
    QueueNotEmpty,
    QueueNotFound,
    QueueTypeMismatch,
    RabbitMQClient,
    RedisClient,
    UnsupportedOperation,
    UnsupportedQueueType,
    client_from_url,
)
from mindtrace_kombu.clients import Client
from mindtrace_kombu.transport import redis as redis_transport

from .conftest import make_client, make_job, unique

SECRET = "s3cr3t-Pa55"
pytestmark = pytest.mark.timeout(60)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def local() -> Orchestrator:
    return Orchestrator(LocalClient(broker_id=unique("errors")))


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text), text


# -- the tree ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, builtin",
    [
        (QueueNotFound, KeyError),
        (QueueTypeMismatch, ValueError),
        (QueueNotEmpty, ValueError),
        (QueueAlreadyExists, ValueError),
        (UnsupportedQueueType, ValueError),
        (InvalidPriority, ValueError),
        (InvalidQueueName, ValueError),
        (JobDecodeError, ValueError),
        (BrokerUnavailable, ConnectionError),
        (ExchangeNotFound, KeyError),
        (UnsupportedOperation, NotImplementedError),
        (QueueArgumentsMismatch, ValueError),
        (MessageTooLarge, ValueError),
        (PermissionDenied, PermissionError),
        (PublishRejected, RuntimeError),
        (BrokerError, RuntimeError),
        (PublishNotConfirmed, BrokerUnavailable),
    ],
)
def test_every_error_is_a_jobs_error_and_its_builtin(error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, JobsError)
    assert issubclass(error, builtin)


def test_jobs_error_is_an_exception() -> None:
    assert issubclass(JobsError, Exception) and not issubclass(JobsError, (KeyError, ValueError))


def test_queue_already_exists_catches_a_type_mismatch(local: Orchestrator) -> None:
    # Given a fifo queue
    queue = unique()
    local.declare_queue(queue)
    # Expect a caller catching the README-era name to catch the mismatch
    with pytest.raises(QueueAlreadyExists):
        local.declare_queue(queue, queue_type="stack")


# -- messages name the queue and the fix ---------------------------------------------------------


def test_queue_not_found_names_queue_and_fix(local: Orchestrator) -> None:
    queue = unique()
    with pytest.raises(QueueNotFound) as info:
        local.count_queue_messages(queue)
    message = str(info.value)
    assert info.value.queue_name == queue
    assert f"queue {queue!r} does not exist" in message
    assert f"declare_queue({queue!r})" in message and "submit()" in message
    assert not message.startswith(('"', "'"))  # not KeyError's repr of the message


def test_queue_not_found_is_caught_as_key_error(local: Orchestrator) -> None:
    try:
        local.receive_message(unique())
    except KeyError as exc:
        assert isinstance(exc, QueueNotFound)
    else:
        pytest.fail("no KeyError")


def test_type_mismatch_names_both_specs_and_force(local: Orchestrator) -> None:
    queue = unique()
    local.declare_queue(queue)
    with pytest.raises(QueueTypeMismatch) as info:
        local.declare_queue(queue, queue_type="priority")
    assert (info.value.queue_name, info.value.existing, info.value.requested) == (
        queue, "fifo", "priority(max_priority=10)",
    )
    assert repr(queue) in str(info.value)
    assert "force=True" in str(info.value) and "messages are dropped" in str(info.value)


def test_unsupported_queue_type_names_the_alternatives() -> None:
    # RabbitMQ cannot be reached here, and need not be: the refusal comes first
    orchestrator = Orchestrator(RabbitMQClient(port=closed_port(), connect_timeout=1))
    queue = unique()
    with pytest.raises(UnsupportedQueueType) as info:
        orchestrator.declare_queue(queue, queue_type="stack")
    message = str(info.value)
    assert (info.value.queue_name, info.value.queue_type, info.value.backend) == (queue, "stack", "RabbitMQ")
    assert repr(queue) in message and "'fifo'" in message and "'priority'" in message and "Redis" in message


def test_invalid_priority_names_queue_range_and_carries_data(local: Orchestrator) -> None:
    queue = unique()
    local.declare_queue(queue, queue_type="priority", max_priority=5)
    with pytest.raises(InvalidPriority) as info:
        local.publish(queue, make_job(), priority=6)
    assert (info.value.queue_name, info.value.priority) == (queue, 6)
    assert repr(queue) in str(info.value) and "0..5" in str(info.value)


def test_priority_on_a_fifo_queue_says_how_to_declare_one(local: Orchestrator) -> None:
    queue = unique()
    local.declare_queue(queue)
    with pytest.raises(InvalidPriority, match=r"declare it with queue_type='priority'"):
        local.publish(queue, make_job(), priority=1)


@pytest.mark.parametrize(
    "name, reason",
    [("", "non-empty"), ("é" * 128, "255 bytes"), ("a\x00b", "control"), ("amq.gen", "reserved"), (7, "string")],
)
def test_invalid_queue_name_gives_the_reason(local: Orchestrator, name: object, reason: str) -> None:
    with pytest.raises(InvalidQueueName, match=reason) as info:
        local.declare_queue(name)  # type: ignore[arg-type]
    assert info.value.queue_name == name


def test_unknown_queue_type_lists_the_choices(local: Orchestrator) -> None:
    with pytest.raises(ValueError, match="'fifo', 'stack', 'priority'"):
        local.declare_queue(unique(), queue_type="lifo")


def test_job_decode_error_names_queue_reason_and_dead_letter_queue() -> None:
    error = JobDecodeError("orders", "cannot decode body: bad json", "orders.dlq")
    assert (error.queue_name, error.reason, error.dead_letter_queue) == ("orders", "cannot decode body: bad json", "orders.dlq")
    assert str(error) == "message on 'orders' is not a valid job (cannot decode body: bad json); it was moved to 'orders.dlq'"


def test_broker_unavailable_says_what_to_check() -> None:
    error = BrokerUnavailable("redis://:**@h:1/0", "ConnectionError: refused")
    assert error.url == "redis://:**@h:1/0"
    assert "redis://:**@h:1/0" in str(error) and "refused" in str(error)
    assert "check that it is running" in str(error) and "connect_timeout" in str(error)


# -- bad input is refused before the broker is touched ---------------------------------------


@pytest.fixture(params=["redis", "rabbitmq"])
def unreachable(request: pytest.FixtureRequest) -> Orchestrator:
    """An orchestrator whose broker does not exist: any broker call would raise BrokerUnavailable."""
    port = closed_port()
    client: Client = RedisClient(port=port, connect_timeout=1) if request.param == "redis" else RabbitMQClient(
        port=port, connect_timeout=1
    )
    return Orchestrator(client)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda o: o.declare_queue("amq.x"), InvalidQueueName),
        (lambda o: o.declare_queue("q", max_priority=0), InvalidPriority),
        (lambda o: o.declare_queue("q", queue_type="stack", max_priority=3), InvalidPriority),
        (lambda o: o.declare_queue("q", queue_type="lifo"), ValueError),
        (lambda o: o.publish("", make_job()), InvalidQueueName),
        (lambda o: o.publish("q", {"not": "a job"}), TypeError),
        (lambda o: o.receive_message("bad\nname"), InvalidQueueName),
        (lambda o: o.count_queue_messages("x" * 300), InvalidQueueName),
        (lambda o: o.clean_queue(""), InvalidQueueName),
        (lambda o: o.delete_queue("amq.y"), InvalidQueueName),
    ],
)
@pytest.mark.timeout(10)
def test_bad_input_is_refused_before_any_broker_call(unreachable: Orchestrator, call: object, error: type) -> None:
    with pytest.raises(error) as info:
        call(unreachable)  # type: ignore[operator]
    assert not isinstance(info.value, BrokerUnavailable)


# -- passwords are masked ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "client",
    [
        RedisClient(password=SECRET),
        RedisClient(password=SECRET, username="app"),
        RedisClient(url=f"redis://:{SECRET}@redis.example:6380/2"),
        RedisClient(url=f"rediss://user:{SECRET}@redis.example:6380/2"),
        RabbitMQClient(username="app", password=SECRET),
        RabbitMQClient(url=f"amqp://app:{SECRET}@rabbit.example:5672//"),
        RabbitMQClient(url=f"amqps://app:{SECRET}@rabbit.example/vhost"),
        client_from_url(f"pyamqp://app:{SECRET}@rabbit.example//"),
        client_from_url(f"redis://:{SECRET}@localhost:6379/0"),
    ],
    ids=repr,
)
def test_client_repr_and_url_mask_the_password(client: Client) -> None:
    assert_no_secret(repr(client), client.url, repr(Orchestrator(client)))
    assert "**" in client.url


@pytest.mark.parametrize("password", ["p@ss:w/rd", "a#b?c%d", "plain"])
def test_passwords_with_url_characters_reach_the_broker_unchanged(password: str) -> None:
    redis_connection = RedisClient(host="h1", port=7000, password=password, username="u/1").kombu_connection()
    assert (redis_connection.hostname, redis_connection.port, redis_connection.password) == ("h1", 7000, password)
    assert redis_connection.userid == "u/1"
    amqp_connection = RabbitMQClient(host="h2", port=5673, username="u@x", password=password).kombu_connection()
    assert (amqp_connection.hostname, amqp_connection.port) == ("h2", 5673)
    assert (amqp_connection.userid, amqp_connection.password, amqp_connection.virtual_host) == ("u@x", password, "/")
    assert password not in repr(RedisClient(password=password))
    assert password not in repr(RabbitMQClient(password=password))


@pytest.mark.parametrize(
    "make",
    [  # the other two forms are in test_broker_unavailable.py
        lambda port: RedisClient(host="127.0.0.1", port=port, password=SECRET, connect_timeout=1),
        lambda port: RabbitMQClient(url=f"amqp://guest:{SECRET}@127.0.0.1:{port}//", connect_timeout=1),
    ],
    ids=["redis-kwargs", "amqp-url"],
)
@pytest.mark.timeout(20)
def test_broker_unavailable_masks_the_password(make: object, caplog: pytest.LogCaptureFixture) -> None:
    # Given a client with a password, pointed at a port nothing listens on
    client: Client = make(closed_port())  # type: ignore[operator]
    orchestrator = Orchestrator(client)
    caplog.set_level(logging.DEBUG)
    # When a broker call fails
    with pytest.raises(BrokerUnavailable) as info:
        orchestrator.declare_queue(unique())
    # Expect the masked URL in the error, and the password nowhere: not in the message, the
    # repr, the chained causes, nor the log records
    error: BaseException | None = info.value
    assert "**@127.0.0.1" in str(info.value)
    assert_no_secret(info.value.url, repr(info.value), info.value.args)
    while error is not None:
        assert_no_secret(str(error), repr(error))
        error = error.__cause__ or error.__context__
    assert_no_secret(*(record.getMessage() for record in caplog.records))
    orchestrator.close()


# -- client_from_url -------------------------------------------------------------------------------


def test_memory_url_gives_a_local_client_scoped_by_path() -> None:
    default = client_from_url("memory://")
    assert isinstance(default, LocalClient) and default.broker_id == "default"
    named = client_from_url("memory:///my_app")
    assert isinstance(named, LocalClient) and named.broker_id == "my_app"


@pytest.mark.parametrize(
    "url, ssl",
    [("redis://localhost:6379/0", False), ("redis://:pw@h:1/3", False), ("rediss://h:6380/0", True)],
)
def test_redis_urls_give_a_redis_client_on_the_exact_order_transport(url: str, ssl: bool) -> None:
    client = client_from_url(url, connect_timeout=2)
    assert type(client) is RedisClient and client.connect_timeout == 2
    connection = client.kombu_connection()
    assert connection.transport_cls is redis_transport.Transport
    assert bool(connection.ssl) is ssl


@pytest.mark.parametrize(
    "url, ssl",
    [("amqp://guest:guest@localhost:5672//", False), ("pyamqp://u:p@h//", False), ("amqps://u:p@h:5671/vh", True)],
)
def test_amqp_urls_give_a_rabbitmq_client_on_py_amqp(url: str, ssl: bool) -> None:
    client = client_from_url(url)
    assert type(client) is RabbitMQClient
    connection = client.kombu_connection()
    assert issubclass(connection.transport_cls, pyamqp.Transport)  # py-amqp, through Kombu's transport
    assert bool(connection.ssl) is ssl
    assert connection.transport_options["confirm_publish"] is True


def test_orchestrator_from_url_uses_client_from_url() -> None:
    orchestrator = Orchestrator.from_url("memory:///from-url", connect_timeout=3)
    assert isinstance(orchestrator.client, LocalClient) and orchestrator.client.connect_timeout == 3


@pytest.mark.parametrize("url", [f"sqs://key:{SECRET}@region/", f"http://u:{SECRET}@h/", "kafka://h:9092"])
def test_other_schemes_are_refused_with_the_supported_list(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported broker URL scheme") as info:
        client_from_url(url)
    for scheme in ("memory://", "redis://", "rediss://", "amqp://", "pyamqp://", "amqps://"):
        assert scheme in str(info.value)
    assert_no_secret(str(info.value))


def test_local_orchestrator_works_end_to_end(local: Orchestrator) -> None:
    # the real parts the errors above come from also work
    queue = unique()
    local.declare_queue(queue)
    job = Job(name="e2e", payload=JobSchema(name="s", input=JobInput(x=1)))
    assert local.publish(queue, job) == job.id
    received = local.receive_message(queue)
    assert received is not None and received.id == job.id
    local.delete_queue(queue)


@pytest.mark.parametrize("backend", ["local", "redis", "rabbitmq"])
def test_delete_if_empty_keeps_a_queue_holding_messages(backend: str) -> None:
    """Given a queue with a message, ``delete_queue(if_empty=True)`` raises QueueNotEmpty naming
    the fix and keeps the queue and its message; once purged, it deletes."""
    orchestrator = Orchestrator(make_client(backend))
    queue = unique("if-empty")
    orchestrator.declare_queue(queue)
    orchestrator.publish(queue, make_job(1))
    with pytest.raises(QueueNotEmpty, match="purge it first"):
        orchestrator.delete_queue(queue, if_empty=True)
    assert orchestrator.count_queue_messages(queue) == 1
    orchestrator.clean_queue(queue)
    orchestrator.delete_queue(queue, if_empty=True)
    with pytest.raises(QueueNotFound):
        orchestrator.count_queue_messages(queue)
    orchestrator.close()
