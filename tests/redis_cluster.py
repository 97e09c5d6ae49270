"""A real Redis Cluster for the tests: 6 ``redis-server --cluster-enabled yes`` processes (3
masters, 3 replicas) on free loopback ports, each in its own directory, created with
``redis-cli --cluster create``; :meth:`RedisClusterNodes.stop` stops exactly those processes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from .helpers import free_port, wait_until

#: Milliseconds before a silent master is failed over (short, so that failover tests are quick).
NODE_TIMEOUT_MS = 1000


class ClusterNode:
    """One cluster-enabled redis-server without persistence."""

    def __init__(self, directory: Path) -> None:
        self.port, self.bus_port = free_port(), free_port()
        self.directory = directory
        directory.mkdir(parents=True)
        self.client = redis.Redis(port=self.port, socket_timeout=5)
        self.start()

    def start(self) -> None:
        """Start the server (again: it rejoins the cluster from its ``nodes.conf``)."""
        self.process = subprocess.Popen(
            [str(shutil.which("redis-server")), "--port", str(self.port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port), "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_until(self.answers, 15, f"cluster node {self.port} answering")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def role(self) -> str:
        return str(self.client.execute_command("ROLE")[0].decode())

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class RedisClusterNodes:
    """Six nodes joined into a cluster with one replica per master."""

    def __init__(self, directory: Path, size: int = 6) -> None:
        self.nodes: list[ClusterNode] = []
        try:
            for n in range(size):
                self.nodes.append(ClusterNode(directory / f"node-{n}"))
            subprocess.run(
                [str(shutil.which("redis-cli")), "--cluster", "create", *(node.address for node in self.nodes),
                 "--cluster-replicas", "1", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60,
            )
            wait_until(self.healthy, 30, "the cluster to be ok on every node")
        except BaseException:
            self.stop()
            raise

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, and three of them are masters."""
        alive = [node for node in self.nodes if node.process.poll() is None]
        states = [node.client.cluster("info").get("cluster_state") for node in alive]
        return all(state == "ok" for state in states) and len(self.masters()) == 3

    @property
    def url(self) -> str:
        """``rediscluster://`` URL listing every node as a startup node."""
        return "rediscluster://" + ",".join(node.address for node in self.nodes)

    def masters(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.process.poll() is None and node.role() == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.kill()
