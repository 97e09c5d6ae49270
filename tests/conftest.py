"""Shared fixtures: real brokers, unique queue names, the backend parametrization.

Unreachable brokers skip their tests with a reason, unless ``MINDTRACE_REQUIRE_BROKERS=1``
(set by ``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Iterator

import pytest

from mindtrace_kombu import Job, JobInput, JobSchema, JobType, Orchestrator
from mindtrace_kombu.clients import Client, LocalClient, RabbitMQClient, RedisClient, client_from_url
from mindtrace_kombu.errors import BrokerUnavailable

from .helpers import free_port, wait_until
from .redis_cluster import RedisClusterNodes

__all__ = ["free_port", "wait_until"]  # re-exported: the tests import them from here

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


def unique(prefix: str = "q") -> str:
    """A queue name no other test or parallel run uses."""
    return f"test-{prefix}-{uuid.uuid4().hex[:10]}"


#: The URL of the Redis Cluster the ``rediscluster`` backend runs on, once a test asked for it.
_cluster_url: list[str] = []


def broker_url(backend: str) -> str:
    if backend == "rediscluster":
        return _cluster_url[0]
    return {"local": f"memory:///{unique('broker')}", "redis": REDIS_TEST_URL, "rabbitmq": AMQP_URL}[backend]


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A 6-node Redis Cluster (3 masters, 3 replicas) for the whole session, started on first
    use, for the tests that need its nodes."""
    require_tools("redis-server", "redis-cli")
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    yield nodes
    nodes.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The ``rediscluster`` backend's broker: ``REDIS_CLUSTER_URL`` (your own cluster), else the
    session's :func:`redis_cluster`."""
    url = os.environ.get("REDIS_CLUSTER_URL") or request.getfixturevalue("redis_cluster").url
    _cluster_url.append(url)
    yield url
    _cluster_url.clear()


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
def client(backend: str, request: pytest.FixtureRequest) -> Client:
    if backend == "rediscluster":
        request.getfixturevalue("redis_cluster_url")
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
