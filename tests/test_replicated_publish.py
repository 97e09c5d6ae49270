"""Replica-acknowledged publishing on Redis (``wait_replicas``), on a master and a replica this
test starts (``redis-server`` processes on free loopback ports, stopped afterwards): a publish
returns once a replica holds the job, and says so when no replica acknowledged it in time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mindtrace_kombu import Orchestrator
from mindtrace_kombu.errors import BrokerUnavailable, InvalidArgument, PublishNotReplicated
from mindtrace_kombu.redis_store import Namespace

from .conftest import make_job, require_tools, unique, wait_until
from .helpers import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    require_tools("redis-server")
    master = RedisServer(tmp_path / "master")
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    try:
        wait_until(lambda: replica.client.info("replication").get("master_link_status") == "up", 20, "replica in sync")
        yield master, replica
    finally:
        replica.stop()
        master.stop()


def test_a_publish_returns_once_a_replica_holds_the_job(pair: tuple[RedisServer, RedisServer]) -> None:
    master, replica = pair
    queue = unique("replicated")
    url = f"redis://127.0.0.1:{master.port}/0?wait_replicas=1&wait_timeout=0.5"
    with Orchestrator.from_url(url) as orchestrator:
        orchestrator.declare_queue(queue)
        # Given a replica in sync: every publish returns once the replica has the job
        jobs = [make_job(n) for n in range(5)]
        for job in jobs[:3]:
            orchestrator.publish(queue, job)
            ready = Namespace().queue(queue).ready
            assert replica.client.zcard(ready) == jobs.index(job) + 1  # already there, no waiting
        orchestrator.publish_many(queue, jobs[3:])
        assert replica.client.zcard(Namespace().queue(queue).ready) == 5

        # When the replica is gone, expect a typed error after the wait timeout, the job on the master
        replica.stop()
        wait_until(lambda: master.client.info("replication").get("connected_slaves") == 0, 20, "the replica gone")
        late = make_job(99)
        with pytest.raises(PublishNotReplicated) as raised:
            orchestrator.publish(queue, late)
        assert isinstance(raised.value, BrokerUnavailable) and raised.value.acknowledged == 0
        assert "reached 0 of 1 replicas" in str(raised.value)
        assert orchestrator.count_queue_messages(queue) == 6
        assert [orchestrator.receive_message(queue) for _ in range(6)][-1] == late


def test_replica_options_are_checked_before_the_broker_is_used() -> None:
    for query, name in (("wait_replicas=-1", "wait_replicas"), ("wait_replicas=x", "wait_replicas"),
                        ("wait_replicas=1&wait_timeout=0", "wait_timeout")):
        with pytest.raises(InvalidArgument, match=name):
            Orchestrator.from_url(f"redis://127.0.0.1:1/0?{query}")
