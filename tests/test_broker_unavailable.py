"""Conformance item 12: a broker that is down or unreachable gives ``BrokerUnavailable`` within a
bounded time set by ``connect_timeout``, never a hang, and the error never shows the password.

Two kinds of dead broker, both on this machine's loopback: a port nothing listens on (refused at
once), and a server that accepts TCP connections but never answers (the handshake times out).
The bound is enforced by pytest-timeout: a hang fails the test instead of stalling the run.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from mindtrace_kombu import BrokerUnavailable, Orchestrator, RabbitMQClient, RedisClient
from mindtrace_kombu.clients import Client

from .conftest import unique

SECRET = "do-not-show-me"
# connect_timeout=1 with Kombu's and the orchestrator's reconnect attempts stays well inside this
pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def refusing_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback server that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:  # the 0.1 s accept timeout: check for stop
                continue
            held.append(connection)

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


CLIENTS: dict[str, Callable[[int], Client]] = {
    "redis": lambda port: RedisClient(host="127.0.0.1", port=port, password=SECRET, connect_timeout=1),
    "redis-url": lambda port: RedisClient(url=f"redis://app:{SECRET}@127.0.0.1:{port}/0", connect_timeout=1),
    "amqp": lambda port: RabbitMQClient(host="127.0.0.1", port=port, password=SECRET, connect_timeout=1),
    "amqp-url": lambda port: Orchestrator.from_url(
        f"amqp://guest:{SECRET}@127.0.0.1:{port}//", connect_timeout=1
    ).client,
}


def assert_unavailable(client: Client, port: int, reason: str) -> None:
    # When the first broker call is made
    orchestrator = Orchestrator(client)
    with pytest.raises(BrokerUnavailable) as info:
        orchestrator.declare_queue(unique("down"))
    # Expect a ConnectionError naming the broker with its password masked
    error = info.value
    assert isinstance(error, ConnectionError)
    assert f"127.0.0.1:{port}" in str(error) and ":**@" in str(error)
    assert SECRET not in str(error) and SECRET not in repr(error) and SECRET not in error.url
    # And the reason, in the message too, with what to check
    assert error.reason == reason and f"is unavailable ({reason}): " in str(error)
    assert "connect_timeout" in str(error) if reason == "timeout" else "check that the broker is running" in str(error)
    orchestrator.close()


# Each case costs a few connect attempts (Kombu's own retry, then the orchestrator's reconnects),
# so the kinds are spread over the two scenarios: keyword and URL forms, Redis and RabbitMQ.
@pytest.mark.parametrize("kind", ["redis", "amqp-url"])
def test_nothing_listening_raises_broker_unavailable(kind: str, refusing_port: int) -> None:
    assert_unavailable(CLIENTS[kind](refusing_port), refusing_port, "refused")


@pytest.mark.parametrize("kind", ["redis-url", "amqp"])
def test_server_that_never_answers_raises_broker_unavailable(kind: str, silent_port: int) -> None:
    assert_unavailable(CLIENTS[kind](silent_port), silent_port, "timeout")
