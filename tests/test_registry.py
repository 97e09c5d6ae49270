"""The worker registry and queue inspection: workers listed while they live (real worker
processes), peeking at ready jobs without taking them, consumer counts, and their CLI commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mindtrace_kombu import Job, Orchestrator, UnsupportedOperation, Worker
from mindtrace_kombu.registry import WorkerInfo

from .celery_test_app_harness import CeleryWorker
from .conftest import REDIS_TEST_URL, REDIS_URL, make_client, make_job, unique, wait_until

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("mindtrace-jobs")
LEASE = 2.0


@pytest.fixture
def redis_queue() -> Iterator[tuple[str, str]]:
    """``(broker URL, queue)`` on the shared Redis, under this run's key prefix."""
    make_client("redis")
    queue = unique("registry")
    with Orchestrator.from_url(REDIS_TEST_URL) as orchestrator:
        orchestrator.declare_queue(queue)
        yield REDIS_TEST_URL, queue
        orchestrator.delete_queue(queue)


def start_worker(url: str, queue: str, log: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.worker_process", url, queue, str(log), "--sleep", "30", "--lease", str(LEASE)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def listed(orchestrator: Orchestrator, pid: int) -> WorkerInfo | None:
    return next((worker for worker in orchestrator.workers() if worker.pid == pid), None)


def test_a_worker_process_is_listed_with_its_job_in_flight_and_gone_after_a_kill(
    redis_queue: tuple[str, str], tmp_path: Path
) -> None:
    url, queue = redis_queue
    with Orchestrator.from_url(url) as orchestrator:
        # Given a worker process holding a job that takes 30 s
        worker = start_worker(url, queue, tmp_path / "log")
        try:
            job_id = orchestrator.publish(queue, make_job(1))
            # Expect it listed within one heartbeat (a third of its lease) with that job in flight
            info = wait_until(lambda: (found := listed(orchestrator, worker.pid)) and job_id in found.in_flight and found,
                              LEASE, "the worker listed with its job in flight")
            assert info.queues == [queue] and info.host and info.kind == "mindtrace"
            assert info.pool == "threads" and info.concurrency == 1
            assert orchestrator.consumer_counts([queue]) == {queue: 1}
            # and listed by the CLI
            shown = subprocess.run([str(SCRIPT), "--broker", url, "workers", "--json"],
                                   capture_output=True, text=True, timeout=60, check=True)
            assert worker.pid in [entry["pid"] for entry in json.loads(shown.stdout)["workers"]]
            # When it is killed, expect it gone within its lease
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
            wait_until(lambda: listed(orchestrator, worker.pid) is None, LEASE * 2, "the dead worker unlisted")
            assert orchestrator.consumer_counts([queue]) == {queue: 0}
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)


def test_a_worker_that_stops_leaves_the_registry_at_once(client_queue: tuple[Orchestrator, str]) -> None:
    orchestrator, queue = client_queue
    done = threading.Event()

    def handle(job: Job) -> None:
        done.set()

    worker = Worker(orchestrator, queue, handle, concurrency=2, prefetch=3)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        info = wait_until(lambda: next(iter(orchestrator.workers()), None), 10, "the worker listed")
        assert (info.queues, info.concurrency) == ([queue], 2)
        orchestrator.publish(queue, make_job(1))
        assert done.wait(10)
        wait_until(lambda: orchestrator.workers()[0].processed == 1, 20, "its count renewed by a heartbeat")
    finally:
        worker.stop()
        thread.join(20)
    assert orchestrator.workers() == []


@pytest.fixture
def client_queue() -> Iterator[tuple[Orchestrator, str]]:
    """An in-process orchestrator of its own broker (a registry nobody else writes to) and a
    queue; its registry TTL made short, so heartbeats come quickly."""
    orchestrator = Orchestrator.from_url(f"memory:///{unique('registry')}")
    orchestrator.backend.registry_ttl = 0.6  # type: ignore[misc]
    queue = unique("registry")
    orchestrator.declare_queue(queue)
    yield orchestrator, queue
    orchestrator.close()


@pytest.mark.parametrize("backend", ["local", "redis", "rabbitmq"])
def test_peek_shows_ready_jobs_in_delivery_order_and_leaves_them(backend: str) -> None:
    with Orchestrator(make_client(backend)) as orchestrator:
        queue = unique("peek")
        orchestrator.declare_queue(queue, max_priority=5)
        try:
            ids = [orchestrator.publish(queue, make_job(n), priority=priority)
                   for n, priority in enumerate([1, 5, 3, 5])]
            # Expect priority order, ties in publish order, and nothing taken
            expected = [ids[1], ids[3], ids[2], ids[0]]
            assert [job.id for job in orchestrator.peek(queue, 3)] == expected[:3]
            assert [job.id for job in orchestrator.peek(queue, 10)] == expected
            assert orchestrator.count_queue_messages(queue) == 4
            assert [orchestrator.receive_message(queue).id for _ in range(4)] == expected  # type: ignore[union-attr]
            # and the CLI shows the same (not for memory://: one process per broker)
            if backend != "local":
                orchestrator.publish(queue, make_job(7))
                shown = subprocess.run(
                    [str(SCRIPT), "--broker", orchestrator.client._url, "peek", queue, "-n", "5", "--json"],
                    capture_output=True, text=True, timeout=60, check=True,
                )
                assert [row["name"] for row in json.loads(shown.stdout)["jobs"]] == ["job-7"]
                assert orchestrator.count_queue_messages(queue) == 1
        finally:
            orchestrator.delete_queue(queue)


def test_rabbitmq_counts_consumers_and_keeps_no_registry() -> None:
    with Orchestrator(make_client("rabbitmq")) as orchestrator:
        queue = unique("consumers")
        orchestrator.declare_queue(queue)
        try:
            with pytest.raises(UnsupportedOperation, match="registry"):
                orchestrator.workers()
            assert orchestrator.consumer_counts([queue, unique("missing")]) == {queue: 0}
            consumer = orchestrator.backend.consumer([queue], 1)
            try:
                assert orchestrator.consumer_counts([queue]) == {queue: 1}
            finally:
                consumer.close()
        finally:
            orchestrator.delete_queue(queue)


def test_queues_filters_by_name_and_counts_consumers_and_delete_if_empty(redis_queue: tuple[str, str]) -> None:
    url, queue = redis_queue
    other = unique("other")
    with Orchestrator.from_url(url) as orchestrator:
        orchestrator.declare_queue(other)
        try:
            orchestrator.publish(queue, make_job(1))
            shown = subprocess.run([str(SCRIPT), "--broker", url, "queues", "--json", "--queue", queue],
                                   capture_output=True, text=True, timeout=60, check=True)
            rows = json.loads(shown.stdout)["queues"]
            assert [(row["name"], row["ready"], row["consumers"]) for row in rows] == [(queue, 1, 0)]
            assert rows[0]["published"] == 1
            refused = subprocess.run([str(SCRIPT), "--broker", url, "delete", queue, "--if-empty"],
                                     capture_output=True, text=True, timeout=60, check=False)
            assert refused.returncode != 0 and "not empty" in refused.stderr
            assert orchestrator.count_queue_messages(queue) == 1
            subprocess.run([str(SCRIPT), "--broker", url, "delete", other, "--if-empty"],
                           capture_output=True, text=True, timeout=60, check=True)
            assert other not in {spec.name for spec in orchestrator.list_queues()}
        finally:
            if other in {spec.name for spec in orchestrator.list_queues()}:
                orchestrator.delete_queue(other)


def test_a_celery_worker_on_the_transport_is_listed_while_it_runs(tmp_path: Path) -> None:
    make_client("redis")
    queue = unique("celery-registry")
    env = {"CELERY_TEST_BROKER": REDIS_URL, "CELERY_TEST_RESULT_BACKEND": REDIS_URL,
           "CELERY_TEST_QUEUES": json.dumps({"double": queue})}
    with Orchestrator.from_url(REDIS_URL, result_backend=None) as orchestrator:  # the app's namespace
        # Given a prefork Celery worker consuming a queue on this package's Redis transport
        worker = CeleryWorker("tests.celery_test_app", [queue], env, tmp_path / "worker.log", unique("registry"),
                              pool="prefork", concurrency=2)
        try:
            # Expect it listed as a celery worker of that queue, by its main process
            info = wait_until(lambda: next((found for found in orchestrator.workers() if queue in found.queues), None),
                              60, f"the Celery worker listed\n{worker.log()}")
            assert (info.kind, info.pid) == ("celery", worker.process.pid)
            assert orchestrator.consumer_counts([queue]) == {queue: 1}
        finally:
            worker.stop()
        # and gone once it stopped
        assert all(queue not in found.queues for found in orchestrator.workers())


def test_queues_watch_reports_publish_and_ack_rates(redis_queue: tuple[str, str]) -> None:
    url, queue = redis_queue
    with Orchestrator.from_url(url) as orchestrator:
        watch = subprocess.Popen(
            [str(SCRIPT), "--broker", url, "queues", "--queue", queue, "--watch", "--interval", "0.3", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert watch.stdout is not None
            first = json.loads(watch.stdout.readline())["queues"][0]
            assert (first["publish_rate"], first["ack_rate"]) == (0, 0)  # nothing happened yet
            # When 5 jobs are published and 2 taken between two samples
            orchestrator.publish_many(queue, [make_job(n) for n in range(5)])
            for _ in range(2):
                orchestrator.receive_message(queue)
            # Expect samples whose rates show them: publishes, then acknowledgements
            rows = []
            while not rows or rows[-1]["ready"] != 3 or not any(row["ack_rate"] for row in rows):
                rows.append(json.loads(watch.stdout.readline())["queues"][0])
                assert len(rows) < 100, rows
            assert any(row["publish_rate"] for row in rows)
            assert (rows[-1]["published"], rows[-1]["unacked"]) == (5, 0)
        finally:
            watch.send_signal(signal.SIGINT)
            watch.communicate(timeout=30)
