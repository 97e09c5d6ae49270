"""Configuration: environment variables, Celery configuration objects, and Kombu URLs.

No broker is contacted here except where a test says so.
"""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace
from typing import Iterator

import pytest

from mindtrace_kombu import Orchestrator
from mindtrace_kombu.clients import LocalClient, RabbitMQClient, RedisClient, RedisSentinelClient, client_from_url
from mindtrace_kombu.config import (
    DEFAULT_BROKER_URL,
    SENTINEL_TRANSPORT,
    BrokerSettings,
    broker_settings,
    broker_url_from_env,
    exact_order_transport,
)
from mindtrace_kombu.models import BackendType
from mindtrace_kombu.serialization import CONTENT_TYPE
from mindtrace_kombu.transport import REDIS_TRANSPORT
from mindtrace_kombu.transport import redis as redis_transport
from mindtrace_kombu.transport import sentinel as sentinel_transport


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for variable in ("MINDTRACE_BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    yield monkeypatch


@pytest.mark.parametrize(
    ("url", "client_class", "backend"),
    [
        ("memory://", LocalClient, BackendType.LOCAL),
        ("memory:///app-a", LocalClient, BackendType.LOCAL),
        ("mindtrace-memory:///app-a", LocalClient, BackendType.LOCAL),
        ("redis://localhost:6379/0", RedisClient, BackendType.REDIS),
        ("rediss://:secret@redis.example:6380/2", RedisClient, BackendType.REDIS),
        ("redis+socket:///run/redis.sock", RedisClient, BackendType.REDIS),
        ("mindtrace-redis://localhost:6379/0", RedisClient, BackendType.REDIS),
        ("sentinel://s1:26379;sentinel://s2:26379/0", RedisSentinelClient, BackendType.REDIS),
        ("amqp://guest:guest@localhost:5672//", RabbitMQClient, BackendType.RABBITMQ),
        ("pyamqp://guest:guest@localhost:5672//", RabbitMQClient, BackendType.RABBITMQ),
        ("amqps://user:secret@rabbit.example:5671/vhost", RabbitMQClient, BackendType.RABBITMQ),
    ],
)
def test_kombu_url_maps_to_its_client(url: str, client_class: type, backend: BackendType) -> None:
    # Given a Kombu URL, When a client is built from it
    client = client_from_url(url)
    # Expect the backend's client, its password masked
    assert type(client) is client_class
    assert client.backend is backend
    assert "secret" not in client.url and "secret" not in repr(client)


def test_redis_urls_connect_through_the_exact_order_transports() -> None:
    # Given Redis and Sentinel clients, When they make connections
    redis_connection = client_from_url("rediss://localhost:6380/0").kombu_connection()
    sentinel_connection = client_from_url(
        "sentinel://s1:26379;sentinel://s2:26379/0", transport_options={"master_name": "jobs"}
    ).kombu_connection()
    # Expect this package's transports, TLS for rediss, and the sentinels as alternates
    assert redis_connection.transport_cls is redis_transport.Transport
    assert redis_connection.ssl
    assert sentinel_connection.transport_cls is sentinel_transport.Transport
    assert sentinel_connection.alt == ["sentinel://s1:26379", "sentinel://s2:26379/0"]
    assert sentinel_connection.transport_options["master_name"] == "jobs"
    assert issubclass(sentinel_transport.Channel, redis_transport.Channel)


def test_unknown_url_scheme_is_refused_with_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="sentinel://"):
        client_from_url("sqs://key:secret@")


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("redis://localhost:6379/0", REDIS_TRANSPORT),
        ("rediss://localhost:6380/0", REDIS_TRANSPORT),
        ("redis://a:6379/0;redis://b:6379/0", REDIS_TRANSPORT),
        ("sentinel://s1:26379;sentinel://s2:26379", SENTINEL_TRANSPORT),
        ("amqp://guest:guest@localhost:5672//", None),
        ("memory://", None),
    ],
)
def test_exact_order_transport_is_chosen_by_scheme(url: str, transport: str | None) -> None:
    assert exact_order_transport(url) == transport


def test_broker_url_from_env_prefers_mindtrace_then_celery_then_local_redis() -> None:
    assert broker_url_from_env({}) == DEFAULT_BROKER_URL
    assert broker_url_from_env({"CELERY_BROKER_URL": "amqp://c//"}) == "amqp://c//"
    both = {"CELERY_BROKER_URL": "amqp://c//", "MINDTRACE_BROKER_URL": "redis://m:6379/1"}
    assert broker_url_from_env(both) == "redis://m:6379/1"


def test_from_env_builds_the_client_of_the_variable_set(clean_env: pytest.MonkeyPatch) -> None:
    # Given no variable, then CELERY_BROKER_URL, then both
    assert isinstance(Orchestrator.from_env().client, RedisClient)
    clean_env.setenv("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//")
    assert isinstance(Orchestrator.from_env().client, RabbitMQClient)
    clean_env.setenv("MINDTRACE_BROKER_URL", "memory:///from-env")
    orchestrator = Orchestrator.from_env()
    # Expect MINDTRACE_BROKER_URL to win
    assert isinstance(orchestrator.client, LocalClient) and orchestrator.client.broker_id == "from-env"


def test_from_config_reads_an_object(clean_env: pytest.MonkeyPatch) -> None:
    # Given a configuration object with broker settings
    config = SimpleNamespace(
        broker_url="redis://localhost:6379/3",
        broker_transport_options={"visibility_timeout": 60},
        broker_connection_timeout=2,
    )
    # When an orchestrator is built from it
    client = Orchestrator.from_config(config).client
    # Expect its URL, transport options and timeout
    assert isinstance(client, RedisClient)
    assert client.url == "redis://localhost:6379/3"
    assert client.transport_options == {"visibility_timeout": 60}
    assert client.connect_timeout == 2.0
    assert broker_settings(config) == BrokerSettings("redis://localhost:6379/3", {"visibility_timeout": 60}, 2)


def test_from_config_lets_celery_broker_url_win_as_celery_does(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CELERY_BROKER_URL", "memory:///celery-env")
    client = Orchestrator.from_config(SimpleNamespace(broker_url="redis://localhost:6379/3")).client
    assert isinstance(client, LocalClient) and client.broker_id == "celery-env"


def test_from_config_without_broker_url_falls_back_to_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MINDTRACE_BROKER_URL", "memory:///fallback")
    client = Orchestrator.from_config(SimpleNamespace()).client
    assert isinstance(client, LocalClient) and client.broker_id == "fallback"


def test_from_config_imports_a_module_by_name(clean_env: pytest.MonkeyPatch) -> None:
    # Given the repository's celeryconfig, pointed at RabbitMQ
    clean_env.setenv("MINDTRACE_BROKER_URL", "amqp://guest:guest@localhost:5672//")
    sys.modules.pop("celeryconfig", None)
    try:
        client = Orchestrator.from_config("celeryconfig").client
    finally:
        sys.modules.pop("celeryconfig", None)
    assert isinstance(client, RabbitMQClient)


def test_from_config_names_a_missing_module() -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_celeryconfig"):
        Orchestrator.from_config("no_such_celeryconfig")


@pytest.mark.parametrize(
    ("env", "transport", "result_backend"),
    [
        ({}, REDIS_TRANSPORT, DEFAULT_BROKER_URL),
        ({"CELERY_BROKER_URL": "redis://localhost:6379/4"}, REDIS_TRANSPORT, "redis://localhost:6379/4"),
        ({"MINDTRACE_BROKER_URL": "amqp://guest:guest@localhost:5672//"}, None, DEFAULT_BROKER_URL),
    ],
)
def test_celeryconfig_follows_the_environment(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], transport: str | None, result_backend: str
) -> None:
    # Given the environment, When celeryconfig is (re)imported
    for variable, value in env.items():
        clean_env.setenv(variable, value)
    sys.modules.pop("celeryconfig", None)
    try:
        config = importlib.import_module("celeryconfig")
    finally:
        sys.modules.pop("celeryconfig", None)
    # Expect the broker, the exact-order transport for Redis, and jobs accepted next to JSON
    assert config.broker_url == broker_url_from_env()
    assert config.broker_transport == transport
    assert config.result_backend == result_backend
    assert config.accept_content == ["json", CONTENT_TYPE]
    assert config.result_accept_content == ["json", CONTENT_TYPE]
    assert (config.task_acks_late, config.worker_prefetch_multiplier) == (True, 1)


@pytest.fixture
def sentinel_url(tmp_path: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Sentinel (``redis-server --sentinel``) watching the test Redis as ``mtmaster``."""
    import shutil
    import socket
    import subprocess
    import time
    from urllib.parse import urlsplit

    from tests.conftest import REDIS_URL, make_client, require_tools

    make_client("redis")
    require_tools("redis-server")
    server = str(shutil.which("redis-server"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    master = urlsplit(REDIS_URL)
    config = tmp_path / "sentinel.conf"  # type: ignore[operator]
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel resolve-hostnames yes\n"
        f"sentinel monitor mtmaster {master.hostname} {master.port or 6379} 1\n"
    )
    process = subprocess.Popen([server, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the sentinel did not start")
                time.sleep(0.05)
        yield f"sentinel://127.0.0.1:{port}{master.path or '/0'}"
    finally:
        process.terminate()
        process.wait(10)


def test_sentinel_url_gives_exact_priorities_through_the_elected_master(sentinel_url: str) -> None:
    # Given an orchestrator on a sentinel:// URL
    from tests.conftest import make_job, unique

    orchestrator = Orchestrator.from_url(sentinel_url, transport_options={"master_name": "mtmaster"})
    queue = unique("sentinel")
    try:
        # When jobs of rising priority are published
        orchestrator.declare_queue(queue, max_priority=5)
        for value, priority in [(1, 1), (2, 4), (3, 2)]:
            orchestrator.publish(queue, make_job(value), priority=priority)
        # Expect the highest priority first, as on redis://
        received = [orchestrator.receive_message(queue) for _ in range(3)]
        assert [job.payload.input.value for job in received if job] == [2, 3, 1]  # type: ignore[attr-defined]
    finally:
        orchestrator.delete_queue(queue)
        orchestrator.close()
