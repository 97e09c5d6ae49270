"""Clients: configuration objects that produce a ``kombu.Connection`` for one backend.

``LocalClient`` -> this package's memory transport, ``RedisClient`` -> this package's Redis
transport (an ordinary ``redis://`` URL underneath), ``RabbitMQClient`` -> Kombu's py-amqp
transport with publisher confirms (awaited per batch, ``transport/amqp.py``). :func:`translate_errors` is the one place where broker exceptions become
this package's errors. Reprs and errors never show a password.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterable, Iterator
from urllib.parse import quote, urlsplit

import amqp.exceptions
import kombu
import kombu.exceptions
import redis.exceptions
from kombu.utils.url import maybe_sanitize_url

from .errors import BrokerUnavailable, QueueNotFound, QueueTypeMismatch, UnsupportedQueueType
from .models import BackendType
from .queues import DEFAULT_MAX_PRIORITY, MAX_PRIORITY_LIMIT, QueueSpec, QueueType
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
    "translate_errors",
]

DEFAULT_CONNECT_TIMEOUT = 5.0
_BACKEND_NAMES = {BackendType.LOCAL: "the local backend", BackendType.REDIS: "Redis", BackendType.RABBITMQ: "RabbitMQ"}
_NO_ROUTE = 312  # basic.return for a mandatory publish to a queue that does not exist


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
        """A new, not yet connected Kombu connection to this broker."""
        raise NotImplementedError

    def check_supported(self, spec: QueueSpec) -> None:
        """Raise :class:`UnsupportedQueueType` if this backend cannot provide ``spec``."""
        if spec.queue_type not in self.supported_types:
            raise UnsupportedQueueType(spec.name, spec.queue_type.value, _BACKEND_NAMES[self.backend], self.unsupported_hint)

    def lookup_spec(self, connection: kombu.Connection, channel: Any, name: str) -> QueueSpec | None:
        """The spec of an existing queue, or None; this package's transports store it."""
        spec: QueueSpec | None = channel.queue_spec(name)
        return spec

    def list_specs(self, connection: kombu.Connection, channel: Any, candidates: Iterable[str]) -> list[QueueSpec]:
        """Every queue the broker knows; ``candidates`` are names to probe where it cannot list."""
        specs: list[QueueSpec] = channel.queue_specs()
        return specs

    def unacked_counts(self, connection: kombu.Connection, channel: Any) -> dict[str, int] | None:
        """Delivered, not yet acknowledged messages per queue, where the broker reports them."""
        counts: dict[str, int] | None = channel.unacked_counts()
        return counts


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
        self.transport_options = transport_options or {}

    def connection(self) -> kombu.Connection:
        options = {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.connect_timeout,  # bounds the AUTH/HELLO handshake of a silent server too
            **self.transport_options,
        }
        return kombu.Connection(
            self._url, transport=self.transport_class,
            ssl=self._url.startswith("rediss"), connect_timeout=self.connect_timeout,
            transport_options=options,
        )


class RedisSentinelClient(RedisClient):
    """Redis through Sentinel: ``sentinel://host:26379[;sentinel://host2:26379][/db]``, with the
    master's name in ``transport_options={"master_name": ...}``, as for Kombu."""

    transport_class = sentinel_transport.Transport


class RabbitMQClient(Client):
    """RabbitMQ backend through py-amqp: durable queues, persistent messages, publisher confirms."""

    backend = BackendType.RABBITMQ
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

    def lookup_spec(self, connection: kombu.Connection, channel: Any, name: str) -> QueueSpec | None:
        """Find an existing queue's spec by equivalence-checking declares.

        AMQP does not report a queue's arguments, but RabbitMQ refuses (406) a declare whose
        ``x-max-priority`` differs from the queue's. Each refusal closes the channel, so each
        probe gets a fresh one; the default 10 and 255 are tried first. A queue declared by
        someone else with other flags matches nothing and is treated as fifo.
        """
        probe = connection.channel()
        try:
            try:
                probe.queue_declare(name, passive=True)
            except amqp.exceptions.NotFound:
                return None
            for spec in _rabbitmq_candidates(name):
                try:
                    probe.queue_declare(name, durable=True, auto_delete=False, arguments=spec.arguments())
                    return spec
                except amqp.exceptions.PreconditionFailed:
                    probe = connection.channel()
            return QueueSpec(name)
        finally:
            probe.close()


    def list_specs(self, connection: kombu.Connection, channel: Any, candidates: Iterable[str]) -> list[QueueSpec]:
        """Queues from the management API when the plugin answers; else the candidates that exist.

        AMQP has no command that lists queues.
        """
        try:
            queues = self._management_queues(connection)
        except (OSError, ValueError):
            found = (self.lookup_spec(connection, channel, name) for name in candidates)
            return [spec for spec in found if spec is not None]
        return [QueueSpec.from_arguments(queue["name"], queue.get("arguments")) for queue in queues]

    def unacked_counts(self, connection: kombu.Connection, channel: Any) -> dict[str, int] | None:
        """From the management API when the plugin answers; AMQP itself does not report them."""
        try:
            queues = self._management_queues(connection)
        except (OSError, ValueError):
            return None
        return {queue["name"]: int(queue.get("messages_unacknowledged", 0)) for queue in queues}

    def _management_queues(self, connection: kombu.Connection) -> list[dict[str, Any]]:
        """The vhost's queues from the management HTTP API (``management_port``)."""
        vhost = quote(connection.virtual_host or "/", safe="")
        request = urllib.request.Request(f"http://{connection.hostname}:{self.management_port}/api/queues/{vhost}")
        token = base64.b64encode(f"{connection.userid}:{connection.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=self.connect_timeout) as response:  # noqa: S310 - http only
            queues: list[dict[str, Any]] = json.load(response)
        return queues


def _rabbitmq_candidates(name: str) -> Iterator[QueueSpec]:
    """Specs to probe, most likely first: fifo, then max_priority 10, 255, 1..254."""
    yield QueueSpec(name)
    rest = (n for n in range(1, MAX_PRIORITY_LIMIT) if n != DEFAULT_MAX_PRIORITY)
    for n in (DEFAULT_MAX_PRIORITY, MAX_PRIORITY_LIMIT, *rest):
        yield QueueSpec(name, QueueType.PRIORITY, n)


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


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    amqp.exceptions.ConnectionError,
    socket.timeout,
    OSError,
)


@contextmanager
def translate_errors(
    client: Client, queue: str, on_channel_error: Callable[[], None] = lambda: None
) -> Iterator[None]:
    """Map broker exceptions to this package's errors, the most specific first.

    ``on_channel_error`` runs when the broker closed the channel (a 404 or 406 on RabbitMQ), so
    the caller can open a fresh one.
    """
    try:
        yield
    except amqp.exceptions.NotFound as exc:
        on_channel_error()
        raise QueueNotFound(queue) from exc
    except amqp.exceptions.PreconditionFailed as exc:
        on_channel_error()
        raise QueueTypeMismatch(queue, "another type", f"what was requested ({exc.reply_text})") from exc
    except amqp.exceptions.ChannelError as exc:
        if exc.reply_code == _NO_ROUTE:
            raise QueueNotFound(queue) from exc
        on_channel_error()
        raise
    except _CONNECTION_ERRORS as exc:
        on_channel_error()
        raise BrokerUnavailable(client.url, f"{type(exc).__name__}: {exc}") from exc
