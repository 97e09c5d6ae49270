"""Kombu transport ``mindtrace-rediscluster``: :mod:`mindtrace_kombu.transport.redis` on Redis
Cluster.

Same queues, keys and semantics as ``mindtrace-redis``: every key of a queue carries the queue's
name as a hash tag, so each script touches one slot, and the store's client is redis-py's
``RedisCluster``, which follows ``MOVED`` and re-reads the slots after a failover. Kombu pins one
connection per channel for BRPOP; here it is moved to the master of the slot whose queues the
next BRPOP waits on (a channel consuming queues in several slots waits on one slot at a time,
for the polling interval divided by the number of slots). Fanout goes through Redis pub/sub,
which a cluster forwards to every node.

Connection string: ``rediscluster://HOST:PORT`` (or ``mindtrace-rediscluster://``), the other
startup nodes in the transport option ``startup_nodes`` (``"host:port,host:port"``); Kombu's
failover syntax (``rediscluster://h1:p1;rediscluster://h2:p2``) adds them too. Celery:
``broker_url = "rediscluster://HOST:PORT"`` with ``import mindtrace_kombu`` in the app module
(it registers the alias), or ``broker_transport = "mindtrace-rediscluster"``.
"""

from __future__ import annotations

from functools import cached_property
from queue import Empty
from typing import Any
from urllib.parse import urlsplit

from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from ..redis_store import RedisStore
from . import redis

__all__ = ["Channel", "Transport", "parse_startup_nodes"]

#: Replies that say the slot's master changed (a failover, a resharding): re-read the slots.
_SLOTS_CHANGED = (MovedError, AskError, ClusterDownError, TryAgainError)


def parse_startup_nodes(nodes: str) -> list[tuple[str, int]]:
    """``"host:port,host:port"`` as ``(host, port)`` pairs (port 6379 when left out)."""
    found = []
    for node in filter(None, (part.strip() for part in nodes.split(","))):
        host, _, port = node.rpartition(":") if ":" in node else (node, "", "")
        found.append((host.strip("[]") or "127.0.0.1", int(port or 6379)))
    return found


class Channel(redis.Channel):
    """This package's Redis channel on a Redis Cluster."""

    #: The cluster's other startup nodes, ``"host:port,host:port"``.
    startup_nodes = ""

    from_transport_options = redis.Channel.from_transport_options + ("startup_nodes",)

    def _startup_nodes(self, params: dict[str, Any]) -> list[ClusterNode]:
        alternates = [urlsplit(url) for url in self.connection.client.alt if "://" in url]
        nodes = [(params["host"], int(params["port"])),
                 *((url.hostname or "127.0.0.1", url.port or 6379) for url in alternates),
                 *parse_startup_nodes(self.startup_nodes)]
        return [ClusterNode(host, port) for host, port in dict.fromkeys(nodes)]  # type: ignore[no-untyped-call]

    @cached_property
    def store(self) -> RedisStore:
        """The queues, on a ``RedisCluster`` client of every master."""
        params = super()._connparams()
        client = RedisCluster(
            startup_nodes=self._startup_nodes(params), username=params.get("username"),
            password=params.get("password"), socket_timeout=params.get("socket_timeout"),
            socket_connect_timeout=params.get("socket_connect_timeout"),
            ssl=bool(self.connection.client.ssl),
        )
        return RedisStore(client, self.namespace, lease_timeout=float(self.lease_timeout))

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """Kombu's, pointed at a node the cluster client reached (the URL's node may be down):
        the pinned connections (BRPOP, pub/sub) start there and BRPOP moves to its slot."""
        params: dict[str, Any] = super()._connparams(asynchronous)
        node = self.store.client.get_default_node()
        params.update(host=node.host, port=node.port, db=0)
        return params

    def _connect_brpop(self, key: str) -> None:
        """Move the pinned BRPOP connection to the master of ``key``'s slot, registered anew
        with Kombu's poller (Kombu's disconnect hook unregisters the old socket)."""
        node = self.store.client.get_node_from_key(key)
        connection = self.client.connection
        if (connection.host, int(connection.port)) != (node.host, int(node.port)):
            connection.disconnect()
            connection.host, connection.port = node.host, node.port
            self.connection.cycle._register(self, self.client, "BRPOP")

    def _brpop_read(self, **options: Any) -> bool:
        """The base channel's; a reply saying the slot moved re-reads the cluster's slots, and
        the next BRPOP goes to the new master."""
        try:
            return bool(super()._brpop_read(**options))
        except _SLOTS_CHANGED:
            self.store.client.nodes_manager.initialize()
            raise Empty() from None


class Transport(redis.Transport):  # type: ignore[misc]
    """This package's Redis transport on Redis Cluster."""

    Channel = Channel
    driver_name = "mindtrace-rediscluster"
