"""The error table (``backends/errors.py``): every broker and client exception becomes one of the
package's errors, caused for real on the local RabbitMQ and Redis, or on Redis servers these
tests start themselves (a replica of nothing, a password-protected server, an ACL user).

Only the DNS row is fed a constructed ``socket.gaierror``: resolving a name would leave this
machine.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import kombu
import pytest
import redis

from mindtrace_kombu import (
    BrokerError,
    BrokerUnavailable,
    MessageTooLarge,
    Orchestrator,
    PermissionDenied,
    PublishRejected,
    QueueArgumentsMismatch,
    QueueNotFound,
    QueueTypeMismatch,
    RabbitMQClient,
    RedisClient,
)
from mindtrace_kombu.backends.base import WireMessage
from mindtrace_kombu.backends.errors import broker_error, translate_errors
from mindtrace_kombu.queues import QueueSpec, QueueType

from .conftest import AMQP_URL, free_port, make_client, make_job, require_tools, unique
from .test_cli import run_all

pytestmark = pytest.mark.timeout(120)

SECRET = "not-the-password"
AMQP = kombu.Connection(AMQP_URL)
MASKED = str(AMQP.as_uri())


def amqp_url(password: str | None = None, vhost: str | None = None, port: int | None = None) -> str:
    return (
        f"amqp://{AMQP.userid}:{password or AMQP.password}@{AMQP.hostname}:{port or AMQP.port or 5672}/"
        f"{AMQP.virtual_host if vhost is None else vhost}"
    )


@pytest.fixture
def rabbit() -> Iterator[Any]:
    """A raw py-amqp channel on the local RabbitMQ, to declare queues as someone else would."""
    make_client("rabbitmq")
    connection = amqp.Connection(
        f"{AMQP.hostname}:{AMQP.port or 5672}", userid=AMQP.userid, password=AMQP.password,
        virtual_host=AMQP.virtual_host or "/",
    )
    connection.connect()
    yield connection.channel()
    connection.close()


@pytest.fixture
def orchestrator() -> Iterator[Orchestrator]:
    make_client("rabbitmq")
    with Orchestrator(RabbitMQClient(url=AMQP_URL, connect_timeout=3)) as orch:
        yield orch


@pytest.fixture
def foreign_queue(rabbit: Any) -> Iterator[Any]:
    """``declare(arguments)``: a queue declared outside this package; deleted afterwards."""
    names: list[str] = []

    def declare(**arguments: Any) -> str:
        names.append(unique("foreign"))
        rabbit.queue_declare(names[-1], durable=True, auto_delete=False, arguments=arguments)
        return names[-1]

    yield declare
    for name in names:
        rabbit.queue_delete(name)


# -- connecting to RabbitMQ --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, reason",
    [
        (amqp_url(password=SECRET), "auth"),
        (amqp_url(vhost="no-such-vhost"), "vhost"),
        (amqp_url(port=free_port()), "refused"),
    ],
    ids=["wrong-password", "unknown-vhost", "refused-port"],
)
def test_connecting_to_rabbitmq_fails_with_the_reason(url: str, reason: str) -> None:
    make_client("rabbitmq")
    # When a broker call is made with a wrong password, an unknown vhost, or to a closed port
    with Orchestrator.from_url(url, connect_timeout=3) as orchestrator, pytest.raises(BrokerUnavailable) as info:
        orchestrator.count_queue_messages(unique())
    # Expect BrokerUnavailable with that reason, in the message too, and no password
    assert info.value.reason == reason
    assert f"is unavailable ({reason}): " in str(info.value) and SECRET not in str(info.value)


def test_the_cli_prints_the_reason_in_one_line_and_exits_4() -> None:
    make_client("rabbitmq")
    # When the CLI is pointed at RabbitMQ with a wrong password, an unknown vhost, a closed port
    results = run_all(
        ("--broker", amqp_url(password=SECRET), "queues"),
        ("--broker", amqp_url(vhost="no-such-vhost"), "queues"),
        ("--broker", amqp_url(port=free_port()), "--connect-timeout", "2", "queues"),
    )
    # Expect exit code 4 and one line naming the masked broker and the reason
    for result, reason in zip(results, ["auth", "vhost", "refused"]):
        assert result.returncode == 4, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"Error: broker amqp://{AMQP.userid}:**@")
        assert f"is unavailable ({reason}): " in result.stderr and SECRET not in result.stderr


def test_an_unresolvable_host_is_reason_dns() -> None:
    # A real resolver failure would leave this machine: the table gets the exception it raises
    error = broker_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), MASKED, "q")
    assert isinstance(error, BrokerUnavailable) and error.reason == "dns"


# -- 406 PRECONDITION_FAILED, classified ---------------------------------------------------------


def test_another_max_priority_is_a_type_mismatch_with_the_force_advice(
    orchestrator: Orchestrator, foreign_queue: Any
) -> None:
    name = foreign_queue(**{"x-max-priority": 5})
    with pytest.raises(QueueTypeMismatch) as info:
        orchestrator.declare_queue(name)
    assert (info.value.existing, info.value.requested) == ("priority(max_priority=5)", "fifo")
    assert "force=True" in str(info.value)


@pytest.mark.parametrize(
    "arguments, argument",
    [
        ({"x-max-length": 10}, "x-max-length"),
        ({"x-message-ttl": 60000}, "x-message-ttl"),
    ],
    ids=["max-length", "message-ttl"],
)
def test_other_arguments_are_an_arguments_mismatch_and_the_queue_stays_usable(
    orchestrator: Orchestrator, foreign_queue: Any, arguments: dict[str, Any], argument: str
) -> None:
    # Given a queue someone else declared with arguments of its own, holding a message
    name = foreign_queue(**arguments)
    first = orchestrator.publish(name, make_job(1))
    # When it is declared through the package, with or without force
    for force in (False, True):
        with pytest.raises(QueueArgumentsMismatch) as info:
            orchestrator.declare_queue(name, force=force)
        # Expect the argument named, the broker's text quoted, and no advice to force
        assert info.value.argument == argument and argument in str(info.value)
        assert "force" not in str(info.value) and not isinstance(info.value, QueueTypeMismatch)
    # And the queue untouched (force deleted nothing), known by its argument, and usable without
    # declaring it (quorum queues: tests/test_quorum_queues.py)
    assert orchestrator.queue_spec(name) == QueueSpec(name, QueueType.FIFO, foreign=argument)
    orchestrator.publish(name, make_job(2))
    assert orchestrator.count_queue_messages(name) == 2
    received = orchestrator.receive_message(name, timeout=5)
    assert received is not None and received.id == first


def test_a_message_over_max_message_size_is_message_too_large(orchestrator: Orchestrator) -> None:
    # Given a queue, and RabbitMQ's default max_message_size of 128 MiB
    name = unique("large")
    orchestrator.declare_queue(name)
    try:
        # When a message of 129 MiB is published (through the seam: bytes, not a job to encode)
        body = b"x" * (129 * 1024 * 1024)
        with pytest.raises(MessageTooLarge) as info:
            orchestrator.backend.publish(name, [WireMessage(body, "application/octet-stream", "binary")], None)
        del body
        # Expect the broker's limit quoted, the advice, and the session still usable
        assert "larger than configured max size" in str(info.value) and "max_message_size" in str(info.value)
        orchestrator.publish(name, make_job())
        assert orchestrator.count_queue_messages(name) == 1
    finally:
        orchestrator.delete_queue(name)


# -- other refusals of the broker ----------------------------------------------------------------


def test_a_full_queue_with_reject_publish_is_publish_rejected(orchestrator: Orchestrator, foreign_queue: Any) -> None:
    # Given a queue that holds one message and refuses more
    name = foreign_queue(**{"x-max-length": 1, "x-overflow": "reject-publish"})
    orchestrator.publish(name, make_job(1))
    # When more are published, one and then three at once
    with pytest.raises(PublishRejected) as one:
        orchestrator.publish(name, make_job(2))
    with pytest.raises(PublishRejected) as three:
        orchestrator.publish_many(name, [make_job(n) for n in range(3)])
    # Expect how many were refused, and the queue as it was
    assert (one.value.refused, one.value.total, three.value.refused, three.value.total) == (1, 1, 3, 3)
    assert "not enqueued" in str(one.value)
    assert orchestrator.count_queue_messages(name) == 1


def test_a_channel_level_access_refused_is_permission_denied(rabbit: Any) -> None:
    # When the broker refuses an operation on a channel (403: the reserved amq. prefix)
    with pytest.raises(PermissionDenied) as info, translate_errors(MASKED, "amq.mine"):
        rabbit.queue_declare("amq.mine")
    # Expect PermissionDenied (a PermissionError), not BrokerUnavailable
    assert isinstance(info.value, PermissionError) and not isinstance(info.value, BrokerUnavailable)
    assert "ACCESS_REFUSED" in str(info.value)


def test_other_channel_errors_are_broker_errors_and_404_is_queue_not_found(rabbit: Any) -> None:
    with pytest.raises(QueueNotFound), translate_errors(MASKED, "missing"):
        rabbit.queue_declare(unique("missing"), passive=True)
    # an ack of a delivery tag the channel never gave: 406 PRECONDITION_FAILED, not a queue's
    with pytest.raises(BrokerError) as info, translate_errors(MASKED, "q"):
        rabbit.basic_ack(12345)
        rabbit.basic_qos(0, 1, False)  # the broker's channel close arrives as this waits
    assert "unknown delivery tag" in str(info.value)


# -- Redis ---------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of this test on a free loopback port, without persistence."""

    def __init__(self, tmp_path: Path, *arguments: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(tmp_path), *arguments],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # ready when it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    require_tools("redis-server")
    servers: list[RedisServer] = []

    def start(*arguments: str) -> RedisServer:
        servers.append(RedisServer(tmp_path, *arguments))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_a_write_to_a_read_only_replica_is_reason_read_only(redis_server: Any) -> None:
    # Given a replica (of a master that is not there: it never syncs, and refuses writes)
    server = redis_server("--replicaof", "127.0.0.1", str(free_port()))
    client = RedisClient("127.0.0.1", server.port, connect_timeout=3)
    with Orchestrator(client) as orchestrator, pytest.raises(BrokerUnavailable) as info:
        orchestrator.declare_queue(unique())
    assert info.value.reason == "read-only" and "read-only replica" in str(info.value)


def test_redis_authentication_and_acl_refusals(redis_server: Any) -> None:
    # Given a server with a password and a user who may not run scripts
    server = redis_server("--requirepass", SECRET)
    redis.Redis(port=server.port, password=SECRET).acl_setuser(
        "limited", enabled=True, passwords=[f"+{SECRET}"], keys=["*"], categories=["+@all"],
        commands=["-evalsha", "-eval"],
    )
    # When a client has no password, a wrong one, or a user without the script commands
    for password in (None, "wrong"):
        client = RedisClient("127.0.0.1", server.port, password=password, connect_timeout=3)
        with Orchestrator(client) as orchestrator, pytest.raises(BrokerUnavailable) as info:
            orchestrator.declare_queue(unique())
        # Expect BrokerUnavailable(auth) for the first two, PermissionDenied for the third
        assert info.value.reason == "auth" and (password is None or "wrong" not in str(info.value))
    client = RedisClient("127.0.0.1", server.port, username="limited", password=SECRET)
    with Orchestrator(client) as orchestrator, pytest.raises(PermissionDenied) as denied:
        orchestrator.declare_queue(unique())
    assert "NOPERM" in str(denied.value) or "permission" in str(denied.value)


def test_a_redis_response_error_is_a_broker_error() -> None:
    client = make_client("redis")
    assert isinstance(client, RedisClient)
    with pytest.raises(BrokerError) as info, translate_errors(client.url, "q"):
        client.redis_client().execute_command("NO-SUCH-COMMAND")
    assert "unknown command" in str(info.value)


def test_a_settlement_on_a_lost_redis_connection_is_broker_unavailable(redis_server: Any) -> None:
    # Given a job taken with acknowledgement from a Redis server
    server = redis_server()
    orchestrator = Orchestrator(RedisClient("127.0.0.1", server.port, connect_timeout=1))
    name = unique()
    orchestrator.declare_queue(name)
    orchestrator.publish(name, make_job())
    delivery = orchestrator.take(name, 5, ack=True)
    assert delivery is not None
    # When the server goes away before the acknowledgement
    server.stop()
    # Expect BrokerUnavailable, not redis-py's ConnectionError
    with pytest.raises(BrokerUnavailable) as info:
        delivery.ack()
    assert info.value.reason in ("refused", "closed")
    with pytest.raises(BrokerUnavailable):  # closing returns the lease's messages: no server either
        orchestrator.close()


def test_every_library_exception_type_has_a_row() -> None:
    """Each exception class of py-amqp, redis-py and Kombu, instantiated bare, maps to an
    error of the package (never passes raw)."""
    import amqp.exceptions as amqp_errors
    import kombu.exceptions as kombu_errors
    import redis.exceptions as redis_errors

    for module, base in ((amqp_errors, amqp_errors.AMQPError), (redis_errors, redis_errors.RedisError),
                         (kombu_errors, kombu_errors.KombuError)):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, base):
                try:
                    exc = value("text")
                except (TypeError, ValueError):  # needs other arguments (cluster redirections)
                    continue
                assert broker_error(exc, MASKED, "q") is not None, value
