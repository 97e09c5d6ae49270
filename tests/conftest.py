"""Shared fixtures: real brokers, unique queue names, the backend parametrization.

Unreachable brokers skip their tests with a reason, unless ``MINDTRACE_REQUIRE_BROKERS=1``
(set by ``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from typing import Any, Callable, Iterator

import pytest

from mindtrace_kombu import Job, JobInput, JobSchema, JobType, Orchestrator
from mindtrace_kombu.clients import Client, LocalClient, RabbitMQClient, RedisClient, client_from_url
from mindtrace_kombu.errors import BrokerUnavailable

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
#: Every key the Orchestrator tests write on Redis lives under this run's own ``global_keyprefix``:
#: nothing else on the database (other runs, other users of db 0) is read or touched; the job
#: records they leave expire after 15 minutes.
TEST_KEYPREFIX = f"mindtrace-test-{uuid.uuid4().hex[:8]}:"
REDIS_TEST_URL = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}result_expires=900&global_keyprefix={TEST_KEYPREFIX}"
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672//")
REQUIRE_BROKERS = os.environ.get("MINDTRACE_REQUIRE_BROKERS") == "1"

BACKENDS = ["local", "redis", "rabbitmq"]


class SampleInput(JobInput):
    """A payload type used across the tests."""

    value: int
    label: str = "sample"


def make_job(value: int = 0, job_type: JobType = JobType.DEFAULT, **input_fields: object) -> Job:
    return Job(
        name=f"job-{value}",
        job_type=job_type,
        payload=JobSchema(name="sample", input=SampleInput(value=value, **input_fields)),
    )


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy (returned), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout} s")
        time.sleep(0.02)
    return value


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str = "q") -> str:
    """A queue name no other test or parallel run uses."""
    return f"test-{prefix}-{uuid.uuid4().hex[:10]}"


def broker_url(backend: str) -> str:
    return {"local": f"memory:///{unique('broker')}", "redis": REDIS_TEST_URL, "rabbitmq": AMQP_URL}[backend]


_unreachable: dict[str, str | None] = {}  # backend -> why it cannot be used, probed once per session


def _probe(client: Client) -> str | None:
    try:
        with client.kombu_connection() as connection:
            connection.ensure_connection(max_retries=1)
            connection.default_channel  # noqa: B018 - opening a channel proves the broker answers
    except Exception as exc:  # noqa: BLE001
        return f"the broker at {client.url} is unreachable: {exc}"
    return None


def require_tools(*names: str) -> None:
    """Skip (or fail under MINDTRACE_REQUIRE_BROKERS=1) unless every command is on PATH: brokers
    in containers leave ``redis-server`` or ``rabbitmqctl`` off the test machine."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        reason = f"{', '.join(missing)} not on PATH"
        if REQUIRE_BROKERS:
            pytest.fail(reason)
        pytest.skip(reason)


def make_client(backend: str) -> Client:
    """A client for ``backend``; skips (or fails under MINDTRACE_REQUIRE_BROKERS=1) if unreachable."""
    client = client_from_url(broker_url(backend), connect_timeout=3)
    if isinstance(client, LocalClient):
        return client
    assert isinstance(client, (RedisClient, RabbitMQClient))
    if backend not in _unreachable:
        _unreachable[backend] = _probe(client)
    reason = _unreachable[backend]
    if reason is not None:
        if REQUIRE_BROKERS:
            pytest.fail(f"{backend}: {reason}")
        pytest.skip(f"{backend}: {reason}")
    return client


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(backend: str) -> Client:
    return make_client(backend)


@pytest.fixture
def orchestrator(client: Client) -> Iterator[Orchestrator]:
    """An orchestrator on the parametrized backend; deletes the queues the test declared."""
    orch = Orchestrator(client)
    yield orch
    for name in list(orch._specs):
        try:
            orch.delete_queue(name)
        except (KeyError, BrokerUnavailable):
            pass
    orch.close()


@pytest.fixture
def queue_name() -> str:
    return unique()
