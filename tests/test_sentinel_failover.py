"""Redis Sentinel failover under load, on servers this test starts: a master, its replica and
three sentinels (``redis-server`` processes on free loopback ports, no persistence, stopped
afterwards). A producer publishes numbered jobs with ``wait_replicas=1`` and a worker runs them
while the master is killed (SIGKILL) or demoted (``SENTINEL FAILOVER``); the sentinels promote
the replica.

What it proves: no job whose ``publish`` returned is lost; after a kill, a job runs twice only if
it was in flight (taken, or published again after an error) when the master died; a publish
during the failover returns late by a bounded time or raises a ``BrokerUnavailable``, never
anything else; the worker rides the failover out on its own and runs the jobs published to the
new master; with no master left, a publish raises ``BrokerUnavailable`` after a bounded time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from mindtrace_kombu import Job, Orchestrator
from mindtrace_kombu.clients import RedisSentinelClient, client_from_url
from mindtrace_kombu.errors import BrokerUnavailable, PublishNotReplicated
from mindtrace_kombu.transport.sentinel import MasterConnection
from mindtrace_kombu.worker import Worker

from .conftest import free_port, make_job, require_tools, unique, wait_until
from .helpers import RedisServer

pytestmark = pytest.mark.timeout(90)

MASTER_NAME = "jobs-master"  # not redis-py's or Kombu's default: the URL's must be used
DOWN_AFTER_MS = 1000
CONCURRENCY, PREFETCH = 2, 4
CONNECT_TIMEOUT, WAIT_TIMEOUT = 3.0, 1.0
#: The longest a single publish may take while the master fails over: three tries (the
#: default connection_retries is 2), each waiting at most connect_timeout for a master, the
#: backoff between them (0.2 s, 0.4 s), one WAIT, and a second of slack for a loaded machine.
PUBLISH_BOUND = 3 * CONNECT_TIMEOUT + 0.6 + WAIT_TIMEOUT + 1.0


class Cluster:
    """One master, one replica, three sentinels watching them (quorum 2)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[RedisServer] = []
        self.master = self.start("master", free_port())
        self.replica = self.start("replica", free_port(), "--replicaof", "127.0.0.1", str(self.master.port))
        wait_until(lambda: self.linked(self.replica), 20, "replica in sync")
        config = (
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.sentinels = [self.start(f"sentinel{n}", free_port(), config=config) for n in range(3)]
        wait_until(self.watching, 30, "three sentinels that know each other, the master and its replica")

    def start(self, name: str, port: int, *arguments: str, config: str | None = None) -> RedisServer:
        """A server in its own directory, stopped by :meth:`close`."""
        server = RedisServer(self.directory / name, *arguments, port=port, config=config, decode_responses=True)
        self.servers.append(server)
        return server

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    @staticmethod
    def linked(replica: RedisServer) -> bool:
        return replica.client.info("replication").get("master_link_status") == "up"

    def states(self) -> list[dict[str, Any]]:
        """What each sentinel says about the master (``SENTINEL MASTER``)."""
        return [cast(dict[str, Any], sentinel.client.sentinel_master(MASTER_NAME)) for sentinel in self.sentinels]

    def watching(self) -> bool:
        return all(state["num-other-sentinels"] == 2 and state["num-slaves"] == 1 and state["port"] == self.master.port
                   for state in self.states())

    def failed_over_to(self, node: RedisServer) -> bool:
        """Every sentinel names ``node`` the master, with one config epoch and no failover
        going on, and ``node`` says it is the master."""
        states = self.states()
        return (
            all(state["port"] == node.port and state["flags"] == "master" for state in states)
            and len({state["config-epoch"] for state in states}) == 1
            and node.client.role()[0] == "master"
        )

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_tools("redis-server")
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


@dataclass
class Producer:
    """Publishes jobs 0, 1, 2... until stopped; after a ``BrokerUnavailable`` it publishes the
    same job again (it may then run twice), after ``PublishNotReplicated`` (the job is on the
    master) it goes on with the next."""

    orchestrator: Orchestrator
    queue: str
    returned: list[int] = field(default_factory=list)
    returned_at: list[float] = field(default_factory=list)
    errors: list[tuple[int, BaseException]] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        number = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.orchestrator.publish(self.queue, make_job(number))
            except Exception as exc:  # noqa: BLE001 - anything but BrokerUnavailable fails the test
                with self.lock:
                    self.errors.append((number, exc))
                    self.durations.append(time.monotonic() - started)
                if isinstance(exc, PublishNotReplicated):
                    number += 1
                elif not isinstance(exc, BrokerUnavailable):
                    return
                continue
            with self.lock:
                self.returned.append(number)
                self.returned_at.append(time.monotonic())
                self.durations.append(time.monotonic() - started)
            number += 1

    def returned_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for at in self.returned_at if at > moment)


def _fail_over(cluster: Cluster, how: str) -> None:
    """Make the replica the master, ``how``: ``kill`` the master (SIGKILL), or ask a sentinel to
    ``demote`` it (``SENTINEL FAILOVER``: it stays up and becomes a replica). Returns once the
    failover settled and a replica follows the new master again (the killed master is started
    again as one, only then: never while the sentinels may still pick it)."""
    old_master, new_master = cluster.master, cluster.replica
    if how == "kill":
        old_master.process.send_signal(signal.SIGKILL)
        old_master.process.wait()
    else:
        cluster.sentinels[0].client.sentinel_failover(MASTER_NAME)
    wait_until(lambda: cluster.failed_over_to(new_master), 30, "the sentinels agreeing on the promoted replica")
    if how == "kill":
        old_master.client.close()
        old_master = cluster.start("revived", old_master.port, "--replicaof", "127.0.0.1", str(new_master.port))
    wait_until(lambda: cluster.linked(old_master), 30, "the old master in sync as a replica of the new one")


@pytest.mark.parametrize("how", ["kill", "demote"])
def test_no_returned_publish_is_lost_when_the_master_fails_over(cluster: Cluster, how: str) -> None:
    queue = unique("failover")
    url = f"{cluster.url}?master_name={MASTER_NAME}&wait_replicas=1&wait_timeout={WAIT_TIMEOUT}&lease_timeout=3"
    processed: list[int] = []
    processed_lock = threading.Lock()

    def handler(job: Job) -> None:
        with processed_lock:
            processed.append(job.payload.input.value)  # type: ignore[attr-defined]

    def processed_jobs() -> Counter[int]:
        with processed_lock:
            return Counter(processed)

    with Orchestrator.from_url(url, connect_timeout=CONNECT_TIMEOUT) as orchestrator:
        orchestrator.declare_queue(queue)
        worker = Worker(orchestrator, queue, handler, concurrency=CONCURRENCY, prefetch=PREFETCH, shutdown_grace=5)
        worker_errors: list[BaseException] = []

        def work() -> None:
            try:
                worker.run()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                worker_errors.append(exc)

        producer = Producer(orchestrator, queue)
        worker_thread, producer_thread = threading.Thread(target=work), threading.Thread(target=producer.run)
        worker_thread.start()
        producer_thread.start()
        try:
            # Given jobs flowing through the master
            wait_until(lambda: len(processed_jobs()) >= 50, 20, "50 jobs processed before the failover")
            # When the master fails over to its replica, under load
            started = time.monotonic()
            _fail_over(cluster, how)
            failover_took = time.monotonic() - started
            # Expect publishing to go on on the new master
            settled_at = time.monotonic()
            wait_until(lambda: producer.returned_since(settled_at) >= 50, 20, "50 publishes returned after the failover")
        finally:
            producer.stopping.set()
            producer_thread.join(30)
        returned = list(producer.returned)
        after_failover = returned[-50:]

        # ... and the worker to run every job whose publish returned, those published to the new
        # master included (jobs it held when the connection broke come back after lease_timeout)
        wait_until(lambda: set(returned) <= set(processed_jobs()), 30, "every job whose publish returned processed")
        worker.stop()
        worker_thread.join(30)

    counts = processed_jobs()
    duplicates = {number: count for number, count in counts.items() if count > 1}
    republished = {number for number, error in producer.errors if not isinstance(error, PublishNotReplicated)}
    print(f"{how}: failover and resync {failover_took:.1f} s; {len(returned)} publishes returned, "
          f"{sum(counts.values())} runs, duplicates {duplicates}, publish errors "
          f"{Counter(type(error).__name__ for _, error in producer.errors)}, longest publish {max(producer.durations):.2f} s")
    assert not worker_thread.is_alive() and not worker_errors, worker_errors
    assert set(after_failover) <= set(counts)
    # never a silent drop: a publish returned (the job is processed) or raised BrokerUnavailable
    assert not producer_thread.is_alive()
    assert all(isinstance(error, BrokerUnavailable) for _, error in producer.errors), producer.errors
    assert max(producer.durations) < PUBLISH_BOUND
    if how == "kill":
        # a job runs twice only if it was in flight when the master died: taken and not yet
        # acknowledged on the replica (at most the prefetch, held by the connection that broke,
        # plus the settlements buffered for the next fetch), or published again after an error
        assert len(set(duplicates) - republished) <= 2 * PREFETCH, duplicates


def test_without_a_master_a_publish_raises_broker_unavailable_in_bounded_time(cluster: Cluster) -> None:
    queue = unique("no-master")
    url = f"{cluster.url}?master_name={MASTER_NAME}"
    with Orchestrator.from_url(url, connect_timeout=1) as orchestrator:
        orchestrator.declare_queue(queue)
        orchestrator.publish(queue, make_job(1))
        # Given no node left to be the master
        cluster.replica.stop()
        cluster.master.stop()
        # When a job is published, expect BrokerUnavailable once each of the three tries waited
        # connect_timeout for a master the sentinels name (plus the 0.6 s of backoff)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as raised:
            orchestrator.publish(queue, make_job(2))
        took = time.monotonic() - started
        assert not isinstance(raised.value, PublishNotReplicated)
        assert 3 * 1.0 <= took < 3 * 1.0 + 0.6 + 2.0, took


def test_the_sentinel_url_names_the_master_and_the_credentials_go_where_kombu_sends_them() -> None:
    # Given a sentinel:// URL with the master's name and password, and the sentinels' password
    client = client_from_url(
        "sentinel://:s%40cret@127.0.0.1:1;sentinel://127.0.0.1:2/3?master_name=jobs&wait_replicas=1",
        connect_timeout=2, transport_options={"sentinel_kwargs": {"password": "sentinels"}},
    )
    assert isinstance(client, RedisSentinelClient) and client.master_name == "jobs" and client.wait_replicas == 1
    # When its redis-py client is made (nothing is connected yet)
    pool = client.redis_client().connection_pool
    # Expect the master's name, password and database on the master's connections, which wait
    # for a master through a failover; the sentinels' own password and the timeouts on theirs
    assert (pool.service_name, pool.connection_kwargs["password"], pool.connection_kwargs["db"]) == ("jobs", "s@cret", 3)
    assert pool.connection_class is MasterConnection
    sentinels = [node.connection_pool.connection_kwargs for node in pool.sentinel_manager.sentinels]
    assert [(kwargs["password"], kwargs["socket_connect_timeout"]) for kwargs in sentinels] == [("sentinels", 2.0)] * 2
    # ... and the name in the Kombu connection's transport options, as Kombu's transport reads it
    assert client.kombu_connection().transport_options["master_name"] == "jobs"
