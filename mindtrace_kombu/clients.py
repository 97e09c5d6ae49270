"""Clients: configuration objects for one broker.

Each client opens the broker's :class:`~.backends.base.Backend` (the seam the Orchestrator,
Worker, dead letters and Celery bridge use) and, for Kombu-facing code, a ``kombu.Connection``
on the matching transport: ``LocalClient`` -> the in-process store and the
``mindtrace-memory`` transport; ``RedisClient`` -> the Redis store and the ``mindtrace-redis``
transport; ``RabbitMQClient`` -> py-amqp with publisher confirms. Reprs and errors never show a
password.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import kombu
import redis
from kombu.utils.url import maybe_sanitize_url
from redis.sentinel import Sentinel

from .backends.amqp import AmqpBackend
from .backends.base import Backend
from .backends.memory import MemoryBackend
from .backends.redis import MAX_WAIT, RedisBackend
from .errors import UnsupportedQueueType
from .models import BackendType
from .queues import QueueSpec, QueueType
from .redis_store import DEFAULT_LEASE_TIMEOUT, DEFAULT_PREFIX, Namespace, RedisStore
from .transport import amqp as amqp_transport
from .transport import memory as memory_transport
from .transport import redis as redis_transport
from .transport import sentinel as sentinel_transport

__all__ = [
    "Client",
    "LocalClient",
    "RabbitMQClient",
    "RedisClient",
    "RedisSentinelClient",
    "client_from_url",
]

DEFAULT_CONNECT_TIMEOUT = 5.0
_BACKEND_NAMES = {BackendType.LOCAL: "the local backend", BackendType.REDIS: "Redis", BackendType.RABBITMQ: "RabbitMQ"}
#: Options of this package's Redis store, read from transport options and the URL query string.
_STORE_OPTIONS = ("lease_timeout", "global_keyprefix", "prefix")


class Client:
    """Base of the three clients: a masked URL, a timeout and a Kombu connection factory."""

    backend: ClassVar[BackendType]
    #: Queue types the backend provides; others raise :class:`UnsupportedQueueType`.
    supported_types: ClassVar[frozenset[QueueType]] = frozenset(QueueType)
    #: What to do instead, in the :class:`UnsupportedQueueType` message.
    unsupported_hint: ClassVar[str] = "use queue_type='fifo', or 'priority' to take urgent jobs first"

    def __init__(self, url: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self._url = url
        self.connect_timeout = connect_timeout

    @property
    def url(self) -> str:
        """The broker URL with its password masked (each URL of a ``;``-separated failover list)."""
        return ";".join(str(maybe_sanitize_url(part)) for part in self._url.split(";"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def connection(self) -> kombu.Connection:
        """A new, not yet connected Kombu connection to this broker (for Kombu-facing code)."""
        raise NotImplementedError

    def open_backend(self) -> Backend:
        """Open this broker's backend (the seam every operation of the package goes through)."""
        raise NotImplementedError

    def check_supported(self, spec: QueueSpec) -> None:
        """Raise :class:`UnsupportedQueueType` if this backend cannot provide ``spec``."""
        if spec.queue_type not in self.supported_types:
            raise UnsupportedQueueType(spec.name, spec.queue_type.value, _BACKEND_NAMES[self.backend], self.unsupported_hint)


class LocalClient(Client):
    """In-process backend. Clients with the same ``broker_id`` share queues; thread-safe."""

    backend = BackendType.LOCAL

    def __init__(self, broker_id: str = "default", **kwargs: Any) -> None:
        super().__init__(f"memory:///{broker_id}", **kwargs)
        self.broker_id = broker_id

    def connection(self) -> kombu.Connection:
        return kombu.Connection(
            transport=memory_transport.Transport, virtual_host=self.broker_id,
            connect_timeout=self.connect_timeout,
        )

    def open_backend(self) -> Backend:
        return MemoryBackend(self.broker_id)


class RedisClient(Client):
    """Redis backend (``redis://``, ``rediss://``, ``redis+socket://``) with exact queue order."""

    backend = BackendType.REDIS
    #: The Kombu transport the connections use.
    transport_class: ClassVar[type] = redis_transport.Transport

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        password: str | None = None,
        *,
        username: str | None = None,
        ssl: bool = False,
        url: str | None = None,
        transport_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if url is None:
            auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@" if password else ""
            url = f"{'rediss' if ssl else 'redis'}://{auth}{host}:{port}/{db}"
        super().__init__(url, **kwargs)
        self._server_url, from_query = _split_store_options(url)
        self.transport_options = {**from_query, **(transport_options or {})}

    @property
    def namespace(self) -> Namespace:
        """Where this client's keys live: Kombu's ``global_keyprefix`` and the ``prefix``
        transport option (default ``mindtrace``)."""
        options = self.transport_options
        return Namespace(str(options.get("global_keyprefix", "")), str(options.get("prefix", DEFAULT_PREFIX)))

    @property
    def lease_timeout(self) -> float:
        """Seconds before a dead consumer's messages return (transport option ``lease_timeout``)."""
        return float(self.transport_options.get("lease_timeout", DEFAULT_LEASE_TIMEOUT))

    def _socket_options(self) -> dict[str, float]:
        # the socket timeout bounds the AUTH/HELLO handshake of a silent server, and must outlast
        # a consumer's longest BRPOP
        return {"socket_connect_timeout": self.connect_timeout, "socket_timeout": self.connect_timeout + MAX_WAIT}

    def connection(self) -> kombu.Connection:
        return kombu.Connection(
            self._server_url, transport=self.transport_class,
            ssl=self._url.startswith("rediss"), connect_timeout=self.connect_timeout,
            transport_options={**self._socket_options(), **self.transport_options},
        )

    def redis_client(self) -> Any:
        """A redis-py client (with its own connection pool) for this broker."""
        return redis.Redis.from_url(self._server_url.replace("redis+socket://", "unix://", 1), **self._socket_options())

    def open_backend(self) -> Backend:
        store = RedisStore(self.redis_client(), self.namespace, lease_timeout=self.lease_timeout)
        return RedisBackend(store, url=self.url)


class RedisSentinelClient(RedisClient):
    """Redis through Sentinel: ``sentinel://host:26379[;sentinel://host2:26379][/db]``, with the
    master's name in ``transport_options={"master_name": ...}``, as for Kombu."""

    transport_class = sentinel_transport.Transport

    def redis_client(self) -> Any:
        """A client of the master the sentinels elect (re-resolved when it fails over)."""
        nodes = [urlsplit(part) for part in self._server_url.split(";")]
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(node.hostname or "localhost", node.port or 26379) for node in nodes],
            sentinel_kwargs={"password": nodes[0].password} if nodes[0].password else None,
            **self._socket_options(),
        )
        db = int((nodes[-1].path or "/0").strip("/") or 0)
        return sentinel.master_for(str(self.transport_options.get("master_name", "mymaster")), db=db)  # type: ignore[no-untyped-call]


class RabbitMQClient(Client):
    """RabbitMQ backend through py-amqp: durable queues, persistent messages, publisher confirms."""

    backend = BackendType.RABBITMQ
    #: Sessions (connection, channel) kept open between operations for reuse.
    idle_sessions: ClassVar[int] = 4
    supported_types = frozenset({QueueType.FIFO, QueueType.PRIORITY})
    unsupported_hint = (
        "RabbitMQ has no LIFO queues: use queue_type='fifo', or 'priority' with rising priorities, "
        "or the Redis or local backend for a stack"
    )

    def __init__(
        self,
        host: str = "localhost",
        port: int = 5672,
        username: str = "guest",
        password: str = "guest",
        virtual_host: str = "/",
        *,
        ssl: bool = False,
        url: str | None = None,
        transport_options: dict[str, Any] | None = None,
        management_port: int = 15672,
        **kwargs: Any,
    ) -> None:
        self.management_port = management_port
        if url is None:
            scheme = "amqps" if ssl else "amqp"
            url = f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(virtual_host, safe='')}"
        super().__init__(url, **kwargs)
        self.transport_options = transport_options or {}

    def connection(self) -> kombu.Connection:
        url = self._url.replace("pyamqp", "amqp", 1)
        return kombu.Connection(
            url, transport=amqp_transport.Transport, ssl=url.startswith("amqps"),
            connect_timeout=self.connect_timeout,
            transport_options={"confirm_publish": True, **self.transport_options},
        )

    def open_backend(self) -> Backend:
        return AmqpBackend(
            self.connection, url=self.url, management_port=self.management_port,
            connect_timeout=self.connect_timeout, max_idle=self.idle_sessions,
        )


def client_from_url(url: str, **kwargs: Any) -> Client:
    """Build the client for a Kombu URL: ``memory://``, ``redis://``, ``rediss://``,
    ``redis+socket://``, ``sentinel://``, ``amqp://``, ``pyamqp://``, ``amqps://`` (and this
    package's ``mindtrace-memory://`` / ``mindtrace-redis://`` aliases)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("memory", "mindtrace-memory"):
        return LocalClient(broker_id=urlsplit(url).path.strip("/") or "default", **kwargs)
    if scheme in ("redis", "rediss", "redis+socket", "mindtrace-redis"):
        return RedisClient(url=url.replace("mindtrace-redis", "redis", 1), **kwargs)
    if scheme == "sentinel":
        return RedisSentinelClient(url=url, **kwargs)
    if scheme in ("amqp", "amqps", "pyamqp"):
        return RabbitMQClient(url=url, **kwargs)
    raise ValueError(
        f"unsupported broker URL scheme {scheme!r} in {maybe_sanitize_url(url)}: use memory://, "
        f"redis://, rediss://, sentinel://, amqp://, pyamqp:// or amqps://"
    )


def _split_store_options(url: str) -> tuple[str, dict[str, Any]]:
    """Take the store's options (``?lease_timeout=5&global_keyprefix=a:``) out of a Redis URL;
    redis-py would refuse them."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, Any] = {key: value for key, value in query if key in _STORE_OPTIONS}
    rest = urlencode([(key, value) for key, value in query if key not in _STORE_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), options
