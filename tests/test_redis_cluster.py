"""Redis Cluster, on real 6-node clusters this file starts (3 masters, 3 replicas; ``redis-server
--cluster-enabled yes`` processes on free loopback ports, stopped afterwards). The conformance
suite runs on the session's cluster too (``tests/test_conformance.py``, backend ``rediscluster``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import ClusterNode, RedisCluster

from mindtrace_kombu import Job, Orchestrator, Worker
from mindtrace_kombu.errors import BrokerUnavailable
from mindtrace_kombu.redis_store import Namespace

from .celery_test_app_harness import CeleryWorker
from .conftest import make_job, require_tools, unique, wait_until
from .redis_cluster import RedisClusterNodes, role

pytestmark = pytest.mark.timeout(180)
SCRIPT = Path(sys.executable).with_name("mindtrace-jobs")


def master_of(cluster: RedisClusterNodes, queue: str) -> int:
    """The port of the master that holds ``queue``'s keys."""
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in cluster.nodes if node.running])
    try:
        return int(client.get_node_from_key(Namespace().queue(queue).meta).port)
    finally:
        client.close()


def slots_apart(cluster: RedisClusterNodes, count: int, prefix: str) -> list[str]:
    """``count`` new queue names whose keys live on ``count`` different masters (count <= 3)."""
    names: dict[int, str] = {}
    while len(names) < count:
        name = unique(prefix)
        names.setdefault(master_of(cluster, name), name)
    return list(names.values())


def test_queues_spread_over_every_master_and_are_all_listed(redis_cluster: RedisClusterNodes) -> None:
    queues = [unique(f"spread{n}") for n in range(20)]
    with Orchestrator.from_url(redis_cluster.url) as orchestrator:
        for n, queue in enumerate(queues):
            orchestrator.declare_queue(queue, max_priority=5)
            orchestrator.publish_many(queue, [make_job(n), make_job(n + 100)], priority=n % 6)
        try:
            # Expect each queue's keys on one master, the queues on every master
            holders = {queue: master_of(redis_cluster, queue) for queue in queues}
            assert set(holders.values()) == {node.port for node in redis_cluster.masters()}
            for queue, port in holders.items():
                node = next(node for node in redis_cluster.nodes if node.port == port)
                assert node.client.exists(*Namespace().queue(queue).all()[:3]) == 3  # meta, ready, bodies
            # and every queue listed, by the API and by the CLI, with its count
            assert set(queues) <= {spec.name for spec in orchestrator.list_queues()}
            listed = subprocess.run([str(SCRIPT), "--broker", redis_cluster.url, "queues", "--json"],
                                    capture_output=True, text=True, timeout=60, check=True)
            rows = {row["name"]: row for row in json.loads(listed.stdout)["queues"]}
            assert all(rows[queue]["ready"] == 2 for queue in queues)
        finally:
            for queue in queues:
                orchestrator.delete_queue(queue)


def test_worker_consumes_queues_on_every_master_with_leases_and_dead_letters(redis_cluster: RedisClusterNodes) -> None:
    queues = slots_apart(redis_cluster, 3, "worker")
    processed: list[int] = []
    lock = threading.Lock()

    def handle(job: Job) -> None:
        value = job.payload.input.value  # type: ignore[attr-defined]
        if value % 10 == 9:
            raise ValueError("nine")
        with lock:
            processed.append(value)

    with Orchestrator.from_url(redis_cluster.url) as orchestrator:
        for queue in queues:
            orchestrator.declare_queue(queue)
        worker = Worker(orchestrator, queues, handle, concurrency=4, max_retries=0)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            # When jobs arrive on three masters while the worker waits
            for n in range(60):
                orchestrator.publish(queues[n % 3], make_job(n))
            expected = [n for n in range(60) if n % 10 != 9]
            wait_until(lambda: len(processed) == len(expected), 60, "every good job processed")
            # Expect each good job once, the failing ones dead-lettered, nothing in flight
            assert sorted(processed) == expected
            wait_until(lambda: sum(orchestrator.count_queue_messages(f"{queue}.dlq") for queue in queues) == 6,
                       30, "the six failing jobs dead-lettered")
            assert all(orchestrator.count_queue_messages(queue) == 0 for queue in queues)
            failed = orchestrator.list_jobs(queues[0], status="failed")
            assert failed and all(job.dead_lettered for job in failed)
        finally:
            worker.stop()
            thread.join(30)
            for queue in queues:
                orchestrator.delete_queue(queue)
                orchestrator.delete_queue(f"{queue}.dlq")
        assert not thread.is_alive()


def test_celery_prefork_worker_runs_tasks_in_exact_priority_order(
    redis_cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    urgent, other = slots_apart(redis_cluster, 2, "celery")
    runs_key = f"{{{unique('runs')}}}:runs"
    env = {"CLUSTER_NODES": ",".join(f"127.0.0.1:{node.port}" for node in redis_cluster.nodes),
           "CLUSTER_RUNS_KEY": runs_key, "CLUSTER_QUEUES": f"{urgent},{other}"}
    os.environ.update(env)  # the app module reads them when the test imports it
    try:
        from . import celery_cluster_app as celery_app
    finally:
        for name in env:
            os.environ.pop(name)
    app, runs = celery_app.app, RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        # Given tasks of mixed priorities waiting before any worker runs
        priorities = [3, 9, 1, 9, 5, 0, 7, 3, 10, 2]
        with app.connection_for_write() as connection:
            for value, priority in enumerate(priorities):
                celery_app.record.apply_async((value,), queue=urgent, priority=priority, connection=connection)
        # When one prefork worker consumes both queues (they live on different masters)
        worker = CeleryWorker("tests.celery_cluster_app", [urgent, other], env, tmp_path / "worker.log", unique("cw"),
                              pool="prefork")
        try:
            wait_until(lambda: runs.llen(runs_key) == len(priorities), 60, f"every task run\n{worker.log()}")
            # Expect higher priorities first, ties in publish order
            order = [int(value) for value in runs.lrange(runs_key, 0, -1)]
            assert order == sorted(range(len(priorities)), key=lambda value: (-priorities[value], value))
            # and a task on the other master's queue runs too, while the worker waits on both
            celery_app.record.apply_async((99,), queue=other)
            wait_until(lambda: runs.llen(runs_key) == len(priorities) + 1, 30, f"the other queue's task\n{worker.log()}")
            assert "Unrecoverable error" not in worker.log()
        finally:
            worker.stop()
    finally:
        runs.delete(runs_key)
        runs.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A cluster of its own, for a test that kills one of its masters."""
    require_tools("redis-server", "redis-cli")
    cluster = RedisClusterNodes(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_failover_under_load_loses_no_job_whose_publish_returned(own_cluster: RedisClusterNodes) -> None:
    """Producers and a worker run; the master holding the queue is SIGKILLed and its replica
    takes over. With replica-acknowledged publishing, every job whose publish returned is
    processed; the producers see a bounded pause or BrokerUnavailable (PublishNotReplicated
    while the new master has no replica), never a silent drop."""
    queue = unique("failover")
    url = f"{own_cluster.url}?wait_replicas=1&wait_timeout=2&lease_timeout=3"
    published: list[int] = []
    failures: list[BaseException] = []
    processed: Counter[int] = Counter()
    lock = threading.Lock()
    stop_producing = threading.Event()

    def produce(offset: int) -> None:
        with Orchestrator.from_url(url) as producer:
            value = offset
            while not stop_producing.is_set():
                try:
                    producer.publish(queue, make_job(value))
                except BrokerUnavailable as exc:  # typed: the job may or may not be there
                    failures.append(exc)
                else:
                    with lock:
                        published.append(value)
                value += 2

    def handle(job: Job) -> None:
        with lock:
            processed[job.payload.input.value] += 1  # type: ignore[attr-defined]

    with Orchestrator.from_url(url) as orchestrator:
        orchestrator.declare_queue(queue)
        worker = Worker(orchestrator, queue, handle, concurrency=2, prefetch=4)
        consuming = threading.Thread(target=worker.run)
        producers = [threading.Thread(target=produce, args=(n,)) for n in range(2)]
        consuming.start()
        for thread in producers:
            thread.start()
        try:
            wait_until(lambda: len(processed) >= 200, 60, "jobs flowing before the failover")
            # When the master that holds the queue dies
            victim = next(node for node in own_cluster.nodes if node.port == master_of(own_cluster, queue))
            victim.stop()
            wait_until(lambda: master_of(own_cluster, queue) != victim.port, 60, "a replica promoted")
            # (the new master has no replica: publishes raise PublishNotReplicated until the old
            # master comes back as its replica)
            victim.start()
            wait_until(lambda: role(victim) == "slave", 60, "the old master back as a replica")
            before = len(published)
            wait_until(lambda: len(published) >= before + 200, 60, f"publishing resumed (errors: {failures[-3:]})")
            stop_producing.set()
            for thread in producers:
                thread.join(60)
            # Expect every job whose publish returned to be processed
            wait_until(lambda: set(published) <= set(processed), 90,
                       f"{len(set(published) - set(processed))} published jobs not processed")
        finally:
            stop_producing.set()
            worker.stop()
            consuming.join(60)
        assert not consuming.is_alive()
        # duplicates only for the few jobs in flight when the master died
        assert sum(count - 1 for count in processed.values()) <= 2 * 4
        assert all(isinstance(exc, BrokerUnavailable) for exc in failures)
        # and with every node gone, a publish gives up with BrokerUnavailable instead of hanging
        own_cluster.stop()
        with pytest.raises(BrokerUnavailable):
            orchestrator.publish(queue, make_job(-1))
