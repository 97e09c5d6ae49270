"""Clients: configuration objects for one broker.

Each client opens the broker's :class:`~.backends.base.Backend` (the seam the Orchestrator,
Worker, dead letters and Celery bridge use) and, for Kombu-facing code, a ``kombu.Connection``
on the matching transport: ``LocalClient`` -> the in-process store and the
``mindtrace-memory`` transport; ``RedisClient`` -> the Redis store and the ``mindtrace-redis``
transport; ``RabbitMQClient`` -> py-amqp with publisher confirms and heartbeats. Reprs and errors
never show a password.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Sequence
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import kombu
import redis
from kombu.utils.url import maybe_sanitize_url
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from .arguments import check_count, check_seconds, check_timeout
from .client_api import ClientQueueAPI
from .backends.amqp import AmqpBackend
from .backends.base import Backend
from .backends.memory import MemoryBackend
from .backends.redis import MAX_WAIT, RedisBackend
from .errors import InvalidArgument, UnsupportedQueueType
from .models import BackendType
from .queues import QueueSpec, QueueType
from .redis_store import DEFAULT_LEASE_TIMEOUT, DEFAULT_PREFIX, DEFAULT_WAIT_TIMEOUT, Namespace, RedisStore
from .results.base import DEFAULT_TTL
from .transport import amqp as amqp_transport
from .transport import cluster as cluster_transport
from .transport import memory as memory_transport
from .transport import redis as redis_transport
from .transport import sentinel as sentinel_transport
from .transport.cluster import parse_startup_nodes

__all__ = [
    "Client",
    "LocalClient",
    "RabbitMQClient",
    "RedisClient",
    "RedisClusterClient",
    "RedisSentinelClient",
    "client_from_url",
]

DEFAULT_CONNECT_TIMEOUT = 5.0
#: RabbitMQ: seconds between heartbeats (the broker's default), and a publish's wait for confirms.
DEFAULT_HEARTBEAT = 60
DEFAULT_CONFIRM_TIMEOUT = 30.0
_BACKEND_NAMES = {BackendType.LOCAL: "the local backend", BackendType.REDIS: "Redis", BackendType.RABBITMQ: "RabbitMQ"}
#: Options of this package's Redis store, read from transport options and the URL query string.
_STORE_OPTIONS = ("lease_timeout", "global_keyprefix", "prefix", "result_expires", "wait_replicas", "wait_timeout")
#: The password of a URL's ``user:password@`` (the user may be empty), to be masked.
_PASSWORD = re.compile(r"^([^:/]+://[^:@/]*:)[^@/]*@")
_NOT_REPLICATED = (
    "replicated queues are RabbitMQ quorum queues: declare it without replicated=True, or use "
    "RabbitMQ (for Redis, see 'Scaling out' in the README)"
)
_NO_PRIORITIES = (
    "RabbitMQ's replicated (quorum) queues take no x-max-priority: declare a replicated fifo "
    "queue, or a priority queue that is not replicated"
)
#: Options of the RabbitMQ client read from the URL query string (Kombu would refuse the second).
_AMQP_OPTIONS = ("heartbeat", "confirm_timeout")


class Client(ClientQueueAPI):
    """Base of the three clients: a masked URL, a timeout and a Kombu connection factory."""

    backend: ClassVar[BackendType]
    #: Queue types the backend provides; others raise :class:`UnsupportedQueueType`.
    supported_types: ClassVar[frozenset[QueueType]] = frozenset(QueueType)
    #: What to do instead, in the :class:`UnsupportedQueueType` message.
    unsupported_hint: ClassVar[str] = "use queue_type='fifo', or 'priority' to take urgent jobs first"
    #: Whether ``declare_queue(..., replicated=True)`` is provided (RabbitMQ quorum queues).
    replicated_queues: ClassVar[bool] = False

    def __init__(self, url: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self._url = url
        self.connect_timeout = check_seconds("connect_timeout", connect_timeout)

    @property
    def url(self) -> str:
        """The broker URL with its password masked (each URL of a ``;``-separated failover list;
        a cluster URL's ``host:port,host:port`` list as written)."""
        return ";".join(_PASSWORD.sub(r"\1**@", part) for part in self._url.split(";"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def kombu_connection(self) -> kombu.Connection:
        """A new, not yet connected Kombu connection to this broker (for Kombu-facing code)."""
        raise NotImplementedError

    def check_supported(self, spec: QueueSpec) -> None:
        """Raise :class:`UnsupportedQueueType` if this backend cannot provide ``spec``."""
        backend = _BACKEND_NAMES[self.backend]
        if spec.queue_type not in self.supported_types:
            raise UnsupportedQueueType(spec.name, spec.queue_type.value, backend, self.unsupported_hint)
        if spec.replicated and not self.replicated_queues:
            raise UnsupportedQueueType(spec.name, "replicated", backend, _NOT_REPLICATED)
        if spec.replicated and spec.queue_type is not QueueType.FIFO:
            raise UnsupportedQueueType(spec.name, f"replicated {spec.queue_type.value}", backend, _NO_PRIORITIES)


class LocalClient(Client):
    """In-process backend. Clients with the same ``broker_id`` share queues; thread-safe."""

    backend = BackendType.LOCAL

    def __init__(self, broker_id: str = "default", **kwargs: Any) -> None:
        super().__init__(f"memory:///{broker_id}", **kwargs)
        self.broker_id = broker_id

    def kombu_connection(self) -> kombu.Connection:
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
        self._server_url, from_query = _split_query(url, _STORE_OPTIONS)
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
        lease_timeout = check_seconds(
            "lease_timeout", _number(self.transport_options.get("lease_timeout", DEFAULT_LEASE_TIMEOUT))
        )
        if not lease_timeout:
            raise InvalidArgument("lease_timeout", lease_timeout, "a lease lasts more than 0 seconds")
        return lease_timeout

    @property
    def result_expires(self) -> float:
        """Seconds a job record of the default result store lives after its last change
        (transport option ``result_expires``, Celery's name; default 24 h)."""
        return check_seconds("result_expires", _number(self.transport_options.get("result_expires", DEFAULT_TTL)))

    def _socket_options(self) -> dict[str, float]:
        # the socket timeout bounds the AUTH/HELLO handshake of a silent server, and must outlast
        # a consumer's longest BRPOP
        return {"socket_connect_timeout": self.connect_timeout, "socket_timeout": self.connect_timeout + MAX_WAIT}

    def kombu_connection(self) -> kombu.Connection:
        return kombu.Connection(
            self._server_url, transport=self.transport_class,
            ssl=self._url.startswith("rediss"), connect_timeout=self.connect_timeout,
            transport_options={**self._socket_options(), **self.transport_options},
        )

    def redis_client(self) -> Any:
        """A redis-py client (with its own connection pool) for this broker."""
        return redis.Redis.from_url(self._server_url.replace("redis+socket://", "unix://", 1), **self._socket_options())

    @property
    def wait_replicas(self) -> int:
        """Replicas that must acknowledge each publish (Redis ``WAIT``) before it returns
        (transport option ``wait_replicas``; default 0: the master's word is enough)."""
        value = _number(self.transport_options.get("wait_replicas", 0))
        return check_count("wait_replicas", int(value) if isinstance(value, float) and value.is_integer() else value, minimum=0)

    @property
    def wait_timeout(self) -> float:
        """Seconds a publish waits for ``wait_replicas`` (transport option ``wait_timeout``)."""
        timeout = check_seconds("wait_timeout", _number(self.transport_options.get("wait_timeout", DEFAULT_WAIT_TIMEOUT)))
        if not timeout:
            raise InvalidArgument("wait_timeout", timeout, "a wait lasts more than 0 seconds")
        return timeout

    def open_backend(self) -> Backend:
        store = RedisStore(
            self.redis_client(), self.namespace, lease_timeout=self.lease_timeout,
            wait_replicas=self.wait_replicas, wait_timeout=self.wait_timeout,
        )
        return RedisBackend(store, url=self.url)


class RedisSentinelClient(RedisClient):
    """Redis through Sentinel: ``sentinel://host:26379[;sentinel://host2:26379][/db]``, with the
    master's name in ``transport_options={"master_name": ...}``, as for Kombu, or in the URL
    (``...;sentinel://host2:26379?master_name=jobs``; the transport option wins).

    The URL's user and password authenticate to the master, the ``sentinel_kwargs`` transport
    option (e.g. ``{"password": ...}``) to the sentinels, and ``min_other_sentinels`` is heeded,
    as in Kombu's ``sentinel://`` transport.

    Failover: every new connection asks the sentinels for the master. A connection that broke
    (the master died, or was demoted: its ``READONLY`` becomes a connection error) raises
    ``BrokerUnavailable``, which ``connection_retries`` and the worker's reconnects retry; while
    no sentinel names a live master, connecting asks them again for up to ``connect_timeout``
    seconds, then ``BrokerUnavailable``. redis-py itself retries nothing: a command that was
    sent may have run, so a retry may publish a job twice (see ``wait_replicas``).
    """

    transport_class = sentinel_transport.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server_url, from_query = _split_query(self._server_url, ("master_name",))
        self.transport_options = {**from_query, **self.transport_options}

    @property
    def master_name(self) -> str:
        """The name the sentinels monitor the master under (default ``mymaster``)."""
        return str(self.transport_options.get("master_name", "mymaster"))

    def redis_client(self) -> Any:
        """A client of the master the sentinels elect (re-resolved when it fails over)."""
        nodes = [urlsplit(part) for part in self._server_url.split(";")]
        socket_options = self._socket_options()
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(node.hostname or "localhost", node.port or 26379) for node in nodes],
            min_other_sentinels=int(self.transport_options.get("min_other_sentinels", 0)),
            sentinel_kwargs={**socket_options, **(self.transport_options.get("sentinel_kwargs") or {})},
            **socket_options,
        )
        db = int((nodes[-1].path or "/0").strip("/") or 0)
        auth = nodes[0]
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            self.master_name, db=db, connection_class=sentinel_transport.MasterConnection,
            username=unquote(auth.username) if auth.username else None,
            password=unquote(auth.password) if auth.password else None,
            retry=None,  # no retry inside redis-py: connecting waits for a master, commands are not resent
        )


class RedisClusterClient(RedisClient):
    """Redis Cluster (``rediscluster://host:port[,host:port...]``, or ``startup_nodes=[(host,
    port), ...]``) through redis-py's cluster client: each queue lives in one hash slot, the
    queues spread over every master, and ``MOVED`` and failovers are followed. Same options as
    :class:`RedisClient` (a cluster has database 0 only)."""

    transport_class = cluster_transport.Transport

    def __init__(
        self,
        startup_nodes: Sequence[tuple[str, int]] = (("localhost", 6379),),
        password: str | None = None,
        *,
        username: str | None = None,
        ssl: bool = False,
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        if url is None:
            auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@" if password else ""
            url = f"{'redisclusters' if ssl else 'rediscluster'}://{auth}" + ",".join(f"{h}:{p}" for h, p in startup_nodes)
        super().__init__(url=url, **kwargs)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """The ``(host, port)`` nodes the client first asks for the cluster's slots: the URL's,
        then those of the ``startup_nodes`` transport option."""
        return list(dict.fromkeys([
            *parse_startup_nodes(urlsplit(self._server_url).netloc.rpartition("@")[2]),
            *parse_startup_nodes(str(self.transport_options.get("startup_nodes", ""))),
        ]))

    def _first_node_url(self) -> str:
        parts = urlsplit(self._server_url)
        auth, _, _ = parts.netloc.rpartition("@")
        host, port = self.startup_nodes[0]
        return f"rediscluster://{auth + '@' if auth else ''}{host}:{port}"

    def kombu_connection(self) -> kombu.Connection:
        nodes = ",".join(f"{host}:{port}" for host, port in self.startup_nodes)
        return kombu.Connection(
            self._first_node_url(), transport=self.transport_class,
            ssl=self._url.startswith("redisclusters"), connect_timeout=self.connect_timeout,
            transport_options={**self._socket_options(), **self.transport_options, "startup_nodes": nodes},
        )

    def redis_client(self) -> Any:
        """A redis-py ``RedisCluster`` client (a connection pool per node)."""
        parts = urlsplit(self._server_url)
        options: dict[str, Any] = self._socket_options()
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.startup_nodes],  # type: ignore[no-untyped-call]
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ssl=parts.scheme == "redisclusters", **options,
        )


class RabbitMQClient(Client):
    """RabbitMQ backend through py-amqp: durable queues, persistent messages, publisher confirms.

    ``heartbeat`` (seconds, 0: off; default 60, or ``?heartbeat=N`` in the URL) applies to every
    connection, so a connection that went silent is noticed within about two intervals (the
    broker may negotiate a shorter interval). ``confirm_timeout`` (seconds, None: no limit;
    default 30, or ``?confirm_timeout=N``) bounds a publish's wait for its confirms:
    ``PublishNotConfirmed`` after it, the messages may or may not be on the queue. The URL's
    query wins over the arguments, as with Kombu.
    """

    backend = BackendType.RABBITMQ
    #: Sessions (connection, channel) kept open between operations for reuse.
    idle_sessions: ClassVar[int] = 16
    supported_types = frozenset({QueueType.FIFO, QueueType.PRIORITY})
    replicated_queues = True
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
        heartbeat: int = DEFAULT_HEARTBEAT,
        confirm_timeout: float | None = DEFAULT_CONFIRM_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        self.management_port = management_port
        if url is None:
            scheme = "amqps" if ssl else "amqp"
            url = f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(virtual_host, safe='')}"
        super().__init__(url, **kwargs)
        self._server_url, query = _split_query(url, _AMQP_OPTIONS)
        self.heartbeat = _heartbeat(query.get("heartbeat", heartbeat))
        self.confirm_timeout = check_timeout("confirm_timeout", _number(query.get("confirm_timeout", confirm_timeout)))
        self.transport_options = transport_options or {}

    def kombu_connection(self) -> kombu.Connection:
        """A Kombu connection with this client's heartbeat: Kombu-facing code that holds it
        must call ``heartbeat_check()`` regularly, as Kombu requires. A blocking read gives up
        after two heartbeat intervals without a frame (the broker sends them even when busy)."""
        url = self._server_url.replace("pyamqp", "amqp", 1)
        silence = {"read_timeout": 2.0 * self.heartbeat, "write_timeout": 2.0 * self.heartbeat} if self.heartbeat else {}
        return kombu.Connection(
            url, transport=amqp_transport.Transport, ssl=url.startswith("amqps"),
            connect_timeout=self.connect_timeout, heartbeat=self.heartbeat,
            transport_options={"confirm_publish": True, **silence, **self.transport_options},
        )

    def open_backend(self) -> Backend:
        return AmqpBackend(
            self.kombu_connection, url=self.url, management_port=self.management_port,
            connect_timeout=self.connect_timeout, max_idle=self.idle_sessions,
            confirm_timeout=self.confirm_timeout, heartbeat=self.heartbeat,
        )


def client_from_url(url: str, **kwargs: Any) -> Client:
    """Build the client for a Kombu URL: ``memory://``, ``redis://``, ``rediss://``,
    ``redis+socket://``, ``sentinel://``, ``rediscluster://``, ``amqp://``, ``pyamqp://``, ``amqps://`` (and this
    package's ``mindtrace-memory://`` / ``mindtrace-redis://`` aliases)."""
    scheme = urlsplit(url).scheme.lower()
    _check_url(url, scheme)
    if scheme in ("memory", "mindtrace-memory"):
        return LocalClient(broker_id=urlsplit(url).path.strip("/") or "default", **kwargs)
    if scheme in ("redis", "rediss", "redis+socket", "mindtrace-redis"):
        return RedisClient(url=url.replace("mindtrace-redis", "redis", 1), **kwargs)
    if scheme == "sentinel":
        return RedisSentinelClient(url=url, **kwargs)
    if scheme in ("rediscluster", "redisclusters", "mindtrace-rediscluster"):
        return RedisClusterClient(url=url.replace("mindtrace-rediscluster", "rediscluster", 1), **kwargs)
    if scheme in ("amqp", "amqps", "pyamqp"):
        return RabbitMQClient(url=url, **kwargs)
    raise ValueError(
        f"unsupported broker URL scheme {scheme!r} in {maybe_sanitize_url(url)}: use memory://, "
        f"redis://, rediss://, sentinel://, rediscluster://, amqp://, pyamqp:// or amqps://"
    )


def _check_url(url: str, scheme: str) -> None:
    """Refuse a malformed port, or a Redis database that is not a number, with the fix."""
    for one in url.split(";"):
        parts = urlsplit(one.strip())
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no credentials
        hosts = parts.netloc.rpartition("@")[2].split(",")  # a cluster's startup nodes
        try:
            for host in hosts:
                urlsplit(f"//{host}").port  # noqa: B018 - parsing it raises for "host:abc"
        except ValueError:
            raise InvalidArgument("broker URL", shown, "the port must be a number from 0 to 65535") from None
        database = parts.path.strip("/")
        if scheme.endswith(("rediscluster", "redisclusters")) and database not in ("", "0"):
            raise InvalidArgument("broker URL", shown, "a Redis Cluster has database 0 only")
        if scheme in ("redis", "rediss", "mindtrace-redis", "sentinel") and database and not database.isdigit():
            raise InvalidArgument("broker URL", shown, "a Redis URL's path is the database number, e.g. /0")


def _split_query(url: str, names: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Take this package's options (``?lease_timeout=5&global_keyprefix=a:``) out of a URL's
    query string; redis-py and Kombu would refuse them."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, Any] = {key: value for key, value in query if key in names}
    if not options:
        return url, options  # untouched: a failover list or an encoded query stays as it was
    rest = urlencode([(key, value) for key, value in query if key not in names])
    return urlunsplit(parts._replace(query=rest)), options


def _number(value: Any) -> Any:
    """A number given as text in a URL, as a float; anything else unchanged (checked later)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _heartbeat(value: object) -> int:
    """AMQP heartbeats are whole seconds, 0 to 65535 (0: off)."""
    number = _number(value)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number <= 65535 or number % 1:
        raise InvalidArgument("heartbeat", value, "it must be whole seconds from 0 (off) to 65535")
    return int(number)
