"""Job status and results across processes, on every result store: real Redis, a SQLite file,
the machine's PostgreSQL (database ``test``, a table per test) and the in-process store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mindtrace_kombu import ExecutionStatus, Job, Orchestrator
from mindtrace_kombu.clients import LocalClient, client_from_url
from mindtrace_kombu.errors import (
    BrokerUnavailable, JobNotFound, ResultsNotConfigured, ResultStoreUnavailable, WaitTimeout,
)
from mindtrace_kombu.results.base import job_record
from mindtrace_kombu.results.sql import SqlResultStore
from mindtrace_kombu.results.urls import result_store_from_url

from .conftest import AMQP_URL, REDIS_TEST_URL, REDIS_URL, TEST_KEYPREFIX, make_client, unique, wait_until
from .results_models import Doubled, handler, make

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("MINDTRACE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
STORES = ["redis", "rediscluster", "sqlite", "postgresql"]


@pytest.fixture
def store_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(broker URL, result store URL)`` for the parametrized store; SQL tables are dropped."""
    kind = request.param
    if kind == "redis":
        make_client("redis")
        yield REDIS_TEST_URL, "default"
        return
    if kind == "rediscluster":  # the records of a batch span the cluster's slots
        yield request.getfixturevalue("redis_cluster_url"), "default"
        return
    table = f"mt_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        make_client("redis")
        url = f"sqlite:///{tmp_path / 'jobs.db'}?table={table}"
        yield REDIS_TEST_URL, url
    else:
        make_client("rabbitmq")
        url = f"{POSTGRES_URL}?table={table}"
        yield AMQP_URL, url
    store = result_store_from_url(url)
    assert isinstance(store, SqlResultStore)
    store.drop()
    store.close()


def run(command: str, broker: str, results: str, queue: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.results_process", command, broker, results, queue, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def observer(broker: str, results: str) -> Orchestrator:
    return Orchestrator.from_url(broker, result_backend=None if results == "default" else results)


def drop_queues(orchestrator: Orchestrator, queue: str) -> None:
    for name in (queue, f"{queue}.dlq"):
        try:
            orchestrator.delete_queue(name)
        except (KeyError, BrokerUnavailable):
            pass


def count_reads(orchestrator: Orchestrator) -> list[int]:
    """Count the store's record reads from now on (the Redis store reads through its records)."""
    reads = [0]
    target: Any = getattr(orchestrator.results, "records", orchestrator.results)
    original = target.get

    def counted(job_id: str) -> Any:
        reads[0] += 1
        return original(job_id)

    target.get = counted
    return reads


@pytest.mark.parametrize("store_setup", STORES, indirect=True)
def test_a_third_process_sees_every_status(store_setup: tuple[str, str]) -> None:
    broker, results = store_setup
    queue = unique("results")
    with observer(broker, results) as orchestrator:
        orchestrator.declare_queue(queue)
        try:
            # Given a producer process that published three jobs and cancelled one
            ids = finish(run("produce", broker, results, queue))
            assert orchestrator.get_job(ids["ok"]).status is ExecutionStatus.QUEUED  # type: ignore[union-attr]
            assert orchestrator.get_job(ids["cancelled"]).status is ExecutionStatus.CANCELLED  # type: ignore[union-attr]
            # When this process waits for the first while a worker process drains the queue
            reads = count_reads(orchestrator)
            waited: list[Job] = []
            waiter = threading.Thread(target=lambda: waited.append(orchestrator.wait_for(ids["ok"], timeout=60)))
            waiter.start()
            started = time.monotonic()
            stats = finish(run("work", broker, results, queue))
            waiter.join(60)
            elapsed = time.monotonic() - started
            # Then the worker completed one, dead-lettered one and skipped the cancelled one
            assert (stats["completed"], stats["dead_lettered"], stats["cancelled"]) == (1, 1, 1)
            assert stats["record_failures"] == 0
            ok = waited[0]
            assert ok.status is ExecutionStatus.COMPLETED and ok.attempts == 1
            assert isinstance(ok.payload.output, Doubled) and ok.payload.output.doubled == 42
            assert ok.payload.output.worker_pid != os.getpid()
            assert ok.started_at and ok.completed_at and ok.error is None
            # ... and the waiter read the record a few times only: woken, not polling fast
            bound = 4 if results == "default" else 8 + 2 * elapsed
            assert reads[0] <= bound, (reads[0], elapsed)
            bad = orchestrator.wait_for(ids["bad"], timeout=30)
            assert bad.status is ExecutionStatus.FAILED and bad.attempts == 2 and bad.dead_lettered
            assert bad.error == "ValueError: negative: -1" and "ValueError" in (bad.traceback or "")
            cancelled = orchestrator.wait_for(ids["cancelled"], timeout=1)
            assert cancelled.status is ExecutionStatus.CANCELLED and cancelled.attempts == 0
            assert cancelled.started_at is None and not orchestrator.cancel(ids["ok"])
            # ... and listings by queue and status see them
            assert {job.id for job in orchestrator.list_jobs(queue)} == set(ids.values())
            assert [job.id for job in orchestrator.list_jobs(queue, status="failed")] == [ids["bad"]]
            assert [job.id for job in orchestrator.list_jobs(queue, ExecutionStatus.COMPLETED, limit=1)] == [ids["ok"]]
            assert orchestrator.forget(ids["ok"]) and orchestrator.get_job(ids["ok"]) is None
            with pytest.raises(JobNotFound):
                orchestrator.wait_for(ids["ok"], timeout=0)
        finally:
            drop_queues(orchestrator, queue)


@pytest.mark.parametrize("store_setup", STORES, indirect=True)
def test_a_killed_worker_shows_running_then_attempt_two_then_completed(
    store_setup: tuple[str, str], tmp_path: Path
) -> None:
    broker, results = store_setup
    queue = unique("killed")
    marker = tmp_path / "hang"
    with observer(broker, results) as orchestrator:
        orchestrator.declare_queue(queue)
        worker = None
        try:
            job = make(4)
            orchestrator.publish(queue, job)
            # Given a worker that hangs in the job
            worker = run("work", broker, results, queue, "--hang-once", str(marker), "--lease", "1")
            wait_until(marker.exists, what="the first run")
            first = orchestrator.get_job(job.id)
            assert first is not None and first.status is ExecutionStatus.RUNNING and first.attempts == 1
            # When it is killed with SIGKILL and another worker gets the job again
            worker.kill()
            worker.wait()
            worker = run("work", broker, results, queue, "--hang-once", str(marker), "--lease", "1")
            again = wait_until(lambda: (found := orchestrator.get_job(job.id)) and found.attempts == 2 and found,
                               what="attempt 2")
            # Then the record shows the second attempt running, then the job completed
            assert again.status is ExecutionStatus.RUNNING
            Path(f"{marker}.go").touch()
            done = orchestrator.wait_for(job.id, timeout=30)
            assert done.status is ExecutionStatus.COMPLETED and done.attempts == 2
            assert isinstance(done.payload.output, Doubled) and done.payload.output.doubled == 8
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                worker.communicate(timeout=30)
            drop_queues(orchestrator, queue)


def test_in_process_store_across_threads() -> None:
    # Given the local backend's default store, shared by orchestrators on the same broker id
    broker = unique("broker")
    producer, observer_ = Orchestrator(LocalClient(broker)), Orchestrator(LocalClient(broker))
    queue = unique("local")
    producer.declare_queue(queue)
    jobs = [make(1), make(-1, max_retries=0), make(2), make(3)]
    for job in jobs:
        producer.publish(queue, job)
    assert producer.cancel(jobs[2].id)
    # When a worker thread drains the queue while another waits
    waited: list[Job] = []
    waiter = threading.Thread(target=lambda: waited.append(observer_.wait_for(jobs[0].id, timeout=30)))
    waiter.start()
    stats = producer.consume(queue, handler, until_empty=True, retry_backoff=0.01)
    waiter.join(30)
    # Then every status is visible, newest first
    assert (stats.completed, stats.dead_lettered, stats.cancelled) == (2, 1, 1)
    assert waited[0].status is ExecutionStatus.COMPLETED and waited[0].payload.output.doubled == 2  # type: ignore[union-attr]
    assert [job.id for job in observer_.list_jobs(queue)] == [job.id for job in reversed(jobs)]
    assert [job.status for job in observer_.list_jobs(queue)] == [
        ExecutionStatus.COMPLETED, ExecutionStatus.CANCELLED, ExecutionStatus.FAILED, ExecutionStatus.COMPLETED,
    ]
    assert Orchestrator(LocalClient(unique("other"))).get_job(jobs[0].id) is None


def test_claim_records_and_skips_cancelled() -> None:
    orchestrator = Orchestrator(LocalClient(unique("broker")))
    queue = unique("claim")
    orchestrator.declare_queue(queue)
    skipped, taken = make(1), make(2)
    orchestrator.publish_many(queue, [skipped, taken])
    assert orchestrator.cancel(skipped.id)
    with orchestrator.claim(queue, timeout=1) as job:
        assert job is not None and job.id == taken.id
        assert orchestrator.get_job(taken.id).status is ExecutionStatus.RUNNING  # type: ignore[union-attr]
    assert orchestrator.get_job(taken.id).status is ExecutionStatus.COMPLETED  # type: ignore[union-attr]
    assert orchestrator.count_queue_messages(queue) == 0


def test_wait_for_times_out_with_a_typed_error() -> None:
    orchestrator = Orchestrator(LocalClient(unique("broker")))
    queue = unique("wait")
    orchestrator.declare_queue(queue)
    job = make(1)
    orchestrator.publish(queue, job)
    with pytest.raises(WaitTimeout) as caught:
        orchestrator.wait_for(job.id, timeout=0.05)
    assert caught.value.status == "queued" and isinstance(caught.value, TimeoutError)


def test_redis_records_expire_after_their_ttl() -> None:
    make_client("redis")
    prefix = f"{TEST_KEYPREFIX}ttl-{uuid.uuid4().hex[:6]}:"
    with Orchestrator.from_url(REDIS_TEST_URL, result_backend=f"{REDIS_URL}?ttl=0.3&global_keyprefix={prefix}") as orchestrator:
        queue = unique("ttl")
        orchestrator.declare_queue(queue)
        try:
            job = make(1)
            orchestrator.publish(queue, job)
            assert orchestrator.get_job(job.id) is not None
            ttl = redis.Redis.from_url(REDIS_URL).pttl(f"{prefix}mindtrace:job:{{{job.id}}}")
            assert 0 < ttl <= 300
            wait_until(lambda: orchestrator.get_job(job.id) is None, timeout=10, what="expiry")
            assert orchestrator.list_jobs(queue) == []
        finally:
            drop_queues(orchestrator, queue)


def test_default_redis_records_are_written_by_the_publish_script() -> None:
    client = make_client("redis")
    with Orchestrator(client) as orchestrator:
        queue = unique("same-call")
        orchestrator.declare_queue(queue)
        try:
            sent: list[str] = []
            store_client = orchestrator.backend.store.client  # type: ignore[attr-defined]
            original = store_client.evalsha

            def spy(sha: str, *args: Any) -> Any:
                sent.append(sha)
                return original(sha, *args)

            store_client.evalsha = spy
            job = make(3)
            orchestrator.publish(queue, job)
            assert len(sent) == 1  # the put script, with the record
            assert orchestrator.get_job(job.id).status is ExecutionStatus.QUEUED  # type: ignore[union-attr]
            # expiring after the broker URL's result_expires (the tests' 900 s; by default 24 h)
            ttl = redis.Redis.from_url(REDIS_URL).pttl(f"{TEST_KEYPREFIX}mindtrace:job:{{{job.id}}}")
            assert client.result_expires == 900 and 800 * 1000 < ttl <= 900 * 1000  # type: ignore[attr-defined]
            assert client_from_url(REDIS_URL).result_expires == 24 * 3600  # type: ignore[attr-defined]
        finally:
            drop_queues(orchestrator, queue)


@pytest.mark.parametrize("results", ["redis://127.0.0.1:1/0", "postgresql://postgres@127.0.0.1:1/test"])
def test_a_store_that_is_down_loses_no_job(results: str) -> None:
    # Given a working broker and a result store nobody listens for
    client = make_client("redis")
    with Orchestrator(client, results=results, connection_retries=0) as orchestrator:
        queue = unique("down")
        orchestrator.declare_queue(queue)
        try:
            job = make(5)
            # When jobs are published and processed
            orchestrator.publish(queue, job)
            stats = orchestrator.consume(queue, lambda job: None, until_empty=True)
            # Then they ran, the failures to record were counted, and reads say why
            assert stats.completed == 1 and stats.record_failures == 2
            assert orchestrator.recorder.failures >= 3
            with pytest.raises(ResultStoreUnavailable) as caught:
                orchestrator.get_job(job.id)
            assert caught.value.reason == "refused" and isinstance(caught.value, BrokerUnavailable)
        finally:
            drop_queues(orchestrator, queue)


def test_rabbitmq_without_a_store_says_how_to_configure_one() -> None:
    client = make_client("rabbitmq")
    with Orchestrator(client) as orchestrator:
        assert orchestrator.results is None
        with pytest.raises(ResultsNotConfigured, match="MINDTRACE_RESULT_BACKEND"):
            orchestrator.get_job("x")


def test_result_backend_from_config_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Config:
        broker_url = f"memory:///{unique('broker')}"
        result_backend = f"sqlite:///{tmp_path / 'a.db'}"

    with Orchestrator.from_config(Config) as orchestrator:
        assert isinstance(orchestrator.results, SqlResultStore) and "a.db" in orchestrator.results.url
    monkeypatch.setenv("MINDTRACE_RESULT_BACKEND", f"sqlite:///{tmp_path / 'b.db'}")
    with Orchestrator.from_config(Config) as orchestrator:
        assert isinstance(orchestrator.results, SqlResultStore) and "b.db" in orchestrator.results.url
    with Orchestrator(LocalClient(unique("broker"))) as orchestrator:
        assert isinstance(orchestrator.results, SqlResultStore)


@pytest.mark.parametrize("url", ["sqlite", "postgresql"])
def test_100k_records_are_looked_up_through_indexes(url: str, tmp_path: Path) -> None:
    table = f"mt_{uuid.uuid4().hex[:12]}"
    store_url = f"sqlite:///{tmp_path / 'big.db'}" if url == "sqlite" else POSTGRES_URL
    store = result_store_from_url(f"{store_url}?table={table}")
    assert isinstance(store, SqlResultStore)
    try:
        jobs = [make(n) for n in range(100_000)]
        for start in range(0, len(jobs), 5000):
            store.save("big" if start % 10000 else "other", [job_record(job) for job in jobs[start:start + 5000]])
        assert store.get(jobs[77_777].id).id == jobs[77_777].id  # type: ignore[union-attr]
        listed = store.list("big", ExecutionStatus.QUEUED, 5)
        assert len(listed) == 5
        with store.engine.connect() as connection:
            from sqlalchemy import text

            explain = "EXPLAIN QUERY PLAN " if url == "sqlite" else "EXPLAIN "
            by_id = " ".join(str(row) for row in connection.execute(
                text(f"{explain}SELECT job FROM {table} WHERE id = :id"), {"id": jobs[5].id}))
            by_queue = " ".join(str(row) for row in connection.execute(text(
                f"{explain}SELECT job FROM {table} WHERE queue = 'big' AND status = 'queued' ORDER BY created DESC LIMIT 5")))
        assert "Index" in by_id or "PRIMARY KEY" in by_id or "INDEX" in by_id, by_id
        assert f"{table}_queue_status" in by_queue, by_queue
    finally:
        store.drop()
        store.close()
