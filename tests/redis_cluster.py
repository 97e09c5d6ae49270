"""A real Redis Cluster for the tests: 6 ``redis-server --cluster-enabled yes`` processes (3
masters, 3 replicas) on free loopback ports, each in its own directory, created with
``redis-cli --cluster create``; :meth:`RedisClusterNodes.stop` stops exactly those processes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .helpers import RedisServer, free_port, wait_until

#: Milliseconds before a silent master is failed over (short, so that failover tests are quick).
NODE_TIMEOUT_MS = 1000


def cluster_node(directory: Path) -> RedisServer:
    """One cluster-enabled node (its bus on a free port: the default, port + 10000, may be taken)."""
    return RedisServer(directory, "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                       "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS))


def role(node: RedisServer) -> str:
    return str(node.client.execute_command("ROLE")[0].decode())  # type: ignore[no-untyped-call]


class RedisClusterNodes:
    """Six nodes joined into a cluster with one replica per master."""

    def __init__(self, directory: Path, size: int = 6) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for n in range(size):
                self.nodes.append(cluster_node(directory / f"node-{n}"))
            subprocess.run(
                [str(shutil.which("redis-cli")), "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
                 "--cluster-replicas", "1", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60,
            )
            wait_until(self.healthy, 30, "the cluster to be ok on every node")
        except BaseException:
            self.stop()
            raise

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, and three of them are masters."""
        states = [node.client.cluster("info").get("cluster_state") for node in self.nodes if node.running]
        return all(state == "ok" for state in states) and len(self.masters()) == 3

    @property
    def url(self) -> str:
        """``rediscluster://`` URL listing every node as a startup node."""
        return "rediscluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def masters(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.running and role(node) == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            if node.running:
                node.stop()
