"""Redis Cluster hash slots: what the store and the records need to know of them."""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from redis.cluster import RedisCluster

__all__ = ["by_slot", "is_cluster"]

T = TypeVar("T")


def is_cluster(client: Any) -> bool:
    """``client`` is a Redis Cluster client: a script or a BRPOP must keep to one slot."""
    return isinstance(client, RedisCluster)


def by_slot(client: Any, items: Sequence[T], key_of: Callable[[T], str]) -> list[list[T]]:
    """``items`` grouped by the hash slot of ``key_of(item)``, in order of first appearance:
    one group on a single server (every key is on it), one per slot on Redis Cluster."""
    if not is_cluster(client):
        return [list(items)]
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(client.keyslot(key_of(item)), []).append(item)
    return list(groups.values())
