"""A real 3-node RabbitMQ cluster on this machine: a replicated (quorum) queue loses no confirmed
job when its leader node stops while a producer publishes and a worker consumes.

The nodes are started here with ``rabbitmq-server`` (names ``mt-<random>-<n>@localhost``, free
ports on 127.0.0.1, data, logs and config in a temporary directory, no plugins) and joined with
``rabbitmqctl join_cluster``; the shared broker is never touched. They share the Erlang cookie of
the user they run as (the Debian package runs them as ``rabbitmq``, like the shared node). The
finalizer stops exactly these nodes, and kills what is left of them, even when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mindtrace_kombu import Job, Orchestrator
from mindtrace_kombu.clients import RabbitMQClient
from mindtrace_kombu.errors import BrokerUnavailable
from mindtrace_kombu.worker import Worker

from .conftest import free_port, make_job, require_tools, unique, wait_until

pytestmark = pytest.mark.slow

NODES = 3
BOOT_TIMEOUT = 90  # seconds for a node to start (three at once on a 2-core machine)
PREFETCH = 10
PUBLISH_RETRIES = 5


@dataclass
class Node:
    """One RabbitMQ node this module started."""

    name: str
    port: int
    pid_file: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def run(self, *args: str, tool: str = "rabbitmqctl") -> subprocess.CompletedProcess[str]:
        """A RabbitMQ CLI command on this node."""
        return subprocess.run(
            [tool, "-n", self.name, *args], capture_output=True, text=True, timeout=BOOT_TIMEOUT, check=False
        )

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` on this node: its output, or the test fails."""
        done = self.run(*args)
        if done.returncode != 0:
            pytest.fail(f"rabbitmqctl -n {self.name} {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def quorum_status(self, queue: str) -> dict[str, str]:
        """Member node -> raft state (``leader``, ``follower``...) of ``queue`` as this node sees
        it; empty while it cannot tell (an election)."""
        done = self.run("quorum_status", queue, "--formatter", "json", tool="rabbitmq-queues")
        if done.returncode != 0:
            return {}
        return {row["Node Name"]: row["Raft State"] for row in json.loads(done.stdout)}

    def leader(self, queue: str) -> str | None:
        """The node leading ``queue``, as this node sees it."""
        return next((node for node, state in self.quorum_status(queue).items() if state == "leader"), None)

    def stop(self) -> None:
        """Stop the node, then kill whatever is left of it (by the pids it was started with)."""
        self.run("stop")
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pids = [self.process.pid]
            if self.pid_file.exists():
                pids.append(int(self.pid_file.read_text().strip() or 0))
            for pid in filter(None, pids):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait(timeout=30)


def start_node(base: Path, name: str) -> Node:
    """``rabbitmq-server`` for node ``name`` with everything of its own under ``base``."""
    home = base / name.partition("@")[0]
    home.mkdir()
    home.chmod(0o777)  # the Debian package's rabbitmq-server runs the node as the rabbitmq user
    port = free_port()
    config = home / "rabbitmq.conf"
    config.write_text(f"listeners.tcp.1 = 127.0.0.1:{port}\n")
    plugins = home / "enabled_plugins"
    plugins.write_text("[].\n")
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),  # not the shared node's 25672, nor port + 20000
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_PID_FILE": str(home / "node.pid"),
    }
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(["rabbitmq-server"], env=env, stdout=log, stderr=subprocess.STDOUT)
    return Node(name, port, home / "node.pid", process)


def in_parallel(*calls: Any) -> None:
    """Run the zero-argument ``calls`` at once; fail with the first error."""
    errors: list[BaseException] = []

    def run(call: Any) -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[Node]]:
    """Three clustered nodes; stopped (and killed if need be) afterwards, whatever happened."""
    require_tools("rabbitmq-server", "rabbitmqctl", "rabbitmq-queues")
    base = Path(tempfile.mkdtemp(prefix="mt-rabbitmq-cluster-"))
    base.chmod(0o755)  # mkdtemp makes it 0700: the nodes may run as another user (below)
    prefix = f"mt-{uuid.uuid4().hex[:8]}"
    nodes: list[Node] = []
    try:
        for number in range(1, NODES + 1):
            nodes.append(start_node(base, f"{prefix}-{number}@localhost"))
        in_parallel(*(
            lambda node=node: node.ctl("wait", "--timeout", str(BOOT_TIMEOUT), str(node.pid_file)) for node in nodes
        ))
        seed = nodes[0]
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.name)
            node.ctl("start_app")
        status = json.loads(seed.ctl("cluster_status", "--formatter", "json"))
        assert sorted(status["running_nodes"]) == sorted(node.name for node in nodes)
        yield nodes
    finally:
        in_parallel(*(node.stop for node in nodes))
        shutil.rmtree(base, ignore_errors=True)


def orchestrator_on(nodes: list[Node], **options: Any) -> Orchestrator:
    """An orchestrator whose connections fail over across ``nodes``, in that order."""
    url = ";".join(node.url for node in nodes)
    return Orchestrator(RabbitMQClient(url=url, connect_timeout=3, heartbeat=10, confirm_timeout=20), **options)


def test_a_quorum_queue_keeps_every_confirmed_job_when_its_leader_stops(cluster: list[Node]) -> None:
    # Given a replicated queue on the 3 nodes, and its leader
    name = unique("quorum")
    with orchestrator_on(cluster) as setup:
        setup.declare_queue(name, replicated=True)
    assert sorted(cluster[0].quorum_status(name)) == sorted(node.name for node in cluster)
    leader_name = wait_until(lambda: cluster[0].leader(name), what="the queue's leader")
    leader = next(node for node in cluster if node.name == leader_name)
    survivors = [node for node in cluster if node is not leader]
    # And a producer publishing with confirms and a worker consuming, both connected to the
    # leader first and listing the other nodes after it
    nodes = [leader, *survivors]
    producer, consumer = orchestrator_on(nodes, connection_retries=PUBLISH_RETRIES), orchestrator_on(nodes)
    confirmed: list[str] = []
    processed: list[str] = []
    stop_publishing = threading.Event()

    def publish() -> None:
        number = 0
        while not stop_publishing.is_set():
            job = make_job(number)
            number += 1
            try:
                producer.publish(name, job)
            except BrokerUnavailable:
                continue  # not confirmed: it may or may not be queued
            confirmed.append(job.id)

    def handle(job: Job) -> None:
        processed.append(job.id)

    worker = Worker(consumer, name, handle, prefetch=PREFETCH)
    threads = [threading.Thread(target=publish), threading.Thread(target=worker.run)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(processed) >= 50, what="jobs processed before the failover")
        # When the leader node stops
        leader.ctl("stop_app")
        stopped_at = (len(confirmed), len(processed))
        # Expect a new leader on another node, publishing and consuming going on through it
        new_leader = wait_until(lambda: survivors[0].leader(name), what="a new leader")
        assert new_leader in {node.name for node in survivors}
        wait_until(lambda: len(confirmed) >= stopped_at[0] + 50, what="jobs confirmed after the failover")
        wait_until(lambda: len(processed) >= stopped_at[1] + 50, what="jobs processed after the failover")
        consumers = json.loads(survivors[0].ctl("list_consumers", "queue_name", "--formatter", "json"))
        assert any(row["queue_name"] == name for row in consumers)
    finally:
        stop_publishing.set()
        threads[0].join(timeout=60)
    # And every confirmed job processed; only jobs in flight at the failover twice
    try:
        wait_until(lambda: set(confirmed) <= set(processed), timeout=60, what="every confirmed job processed")
    finally:
        worker.stop()
        threads[1].join(timeout=60)
        producer.close()
        consumer.close()
    twice = [job_id for job_id, times in Counter(processed).items() if times > 1]
    assert len(twice) <= PREFETCH + PUBLISH_RETRIES, twice
    # a run whose connection was lost before its acknowledgement is not completed (it ran again)
    assert len(processed) - PREFETCH <= worker.stats.completed <= len(processed)
