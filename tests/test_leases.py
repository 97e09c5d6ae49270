"""Leases instead of a visibility timeout (Redis): what a live consumer holds is never
delivered twice, a dead consumer's jobs come back within its lease, first in line and in
order, and nobody else's lease settings matter. Real worker processes, killed with SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mindtrace_kombu import Orchestrator
from mindtrace_kombu.clients import RedisClient

from .conftest import REDIS_TEST_URL, make_client, make_job, unique

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
LEASE = 1.5  # seconds; the processes below heartbeat every LEASE / 3


def redis_orchestrator(lease_timeout: float) -> Orchestrator:
    client = make_client("redis")
    assert isinstance(client, RedisClient)
    client.transport_options["lease_timeout"] = lease_timeout
    return Orchestrator(client)


@pytest.fixture
def orchestrator() -> Iterator[Orchestrator]:
    orch = redis_orchestrator(LEASE)
    yield orch
    for name in list(orch._specs):
        try:
            orch.delete_queue(name)
        except KeyError:
            pass
    orch.close()


def start_process(queue: str, log: Path, *extra: str) -> subprocess.Popen[str]:
    make_client("redis")  # skips, or fails under MINDTRACE_REQUIRE_BROKERS=1, without Redis
    url = f"{REDIS_TEST_URL}&lease_timeout={LEASE}"  # this run's key prefix; the lease in the URL
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.worker_process", url, queue, str(log), "--lease", str(LEASE), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def log_lines(log: Path) -> list[tuple[str, str]]:
    words = log.read_text().split() if log.exists() else []
    return list(zip(words[::2], words[1::2]))


def wait_for(condition: object, timeout: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.05)
    return time.monotonic() - started


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_job_three_times_longer_than_the_lease_runs_once(orchestrator: Orchestrator, tmp_path: Path) -> None:
    """Given two live workers with a 1.5 s lease, when one runs a 4.5 s job, the other never
    gets it: the job runs exactly once."""
    queue = unique("long")
    orchestrator.declare_queue(queue)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_process(queue, log, "--sleep", str(3 * LEASE)) for log in logs]
    try:
        job = make_job(1)
        orchestrator.publish(queue, job)
        wait_for(lambda: any(("done", job.id) in log_lines(log) for log in logs), 30)
        # one more lease past the end: a redelivery would have started by now
        wait_for(lambda: orchestrator.count_queue_messages(queue) == 0 and (orchestrator.unacked_counts() or {}).get(queue, 0) == 0, 10)
    finally:
        for worker in workers:
            stop(worker)
    starts = [entry for log in logs for entry in log_lines(log) if entry[0] == "start"]
    assert starts == [("start", job.id)]


def test_killed_worker_jobs_return_first_in_line_in_order(orchestrator: Orchestrator, tmp_path: Path) -> None:
    """Given a worker holding 50 jobs (prefetch 50) and 10 more published after it took them,
    when it is killed with SIGKILL, then the 50 are ready again within the lease plus one
    heartbeat, with no worker running, and come back first, in their original order."""
    queue = unique("kill")
    orchestrator.declare_queue(queue)
    held = [make_job(n) for n in range(50)]
    orchestrator.publish_many(queue, held)
    log = tmp_path / "worker.log"
    worker = start_process(queue, log, "--sleep", "3600", "--prefetch", "50")
    wait_for(lambda: log_lines(log) != [], 10)
    later = [make_job(100 + n) for n in range(10)]
    orchestrator.publish_many(queue, later)
    assert orchestrator.count_queue_messages(queue) == 10
    worker.kill()
    worker.wait()
    killed = time.monotonic()
    assert orchestrator.count_queue_messages(queue) == 10  # not before the lease has run out
    waited = wait_for(lambda: orchestrator.count_queue_messages(queue) == 60, 3 * LEASE + 5)
    assert time.monotonic() - killed <= LEASE + LEASE / 3 + 2.0, waited
    received = [orchestrator.receive_message(queue) for _ in range(60)]
    assert [job.id for job in received if job] == [job.id for job in held + later]


def test_short_lease_never_touches_another_consumers_jobs(orchestrator: Orchestrator) -> None:
    """Given a consumer with a 60 s lease holding a job, when a consumer with a 0.3 s lease
    works the same queue for several of its lease periods, then the held job stays in flight
    (never delivered to it) until the first consumer acknowledges it."""
    queue = unique("short")
    orchestrator.declare_queue(queue)
    patient, hasty = redis_orchestrator(60), redis_orchestrator(0.3)
    try:
        held = make_job(1)
        patient.publish(queue, held)
        with patient.claim(queue) as job:
            assert job is not None and job.id == held.id
            others = [make_job(n) for n in range(2, 12)]
            hasty.publish_many(queue, others)
            seen = []
            deadline = time.monotonic() + 1.5  # five of the hasty consumer's leases
            while time.monotonic() < deadline:
                with hasty.claim(queue, timeout=0.05) as other:
                    if other is not None:
                        seen.append(other.id)
            assert held.id not in seen
            assert sorted(seen) == sorted(job.id for job in others)
            assert (hasty.unacked_counts() or {}).get(queue) == 1
        assert (hasty.unacked_counts() or {}).get(queue, 0) == 0
        assert hasty.receive_message(queue) is None
    finally:
        patient.close()
        hasty.close()


def test_process_killed_inside_claim_loses_its_job_to_nobody(orchestrator: Orchestrator, tmp_path: Path) -> None:
    """Given a process inside ``claim()``, when it is killed with SIGKILL and no worker runs,
    then the job is back within the lease and the next take gets it, marked redelivered."""
    queue = unique("claim")
    orchestrator.declare_queue(queue)
    job = make_job(7)
    orchestrator.publish(queue, job)
    process = start_process(queue, tmp_path / "claim.log", "--claim")
    assert orchestrator.count_queue_messages(queue) == 0
    process.kill()
    process.wait()
    wait_for(lambda: orchestrator.count_queue_messages(queue) == 1, 3 * LEASE + 5)
    delivery = orchestrator.take(queue, None, ack=False)
    assert delivery is not None and delivery.redelivered
    assert orchestrator.decode_job(delivery).id == job.id


def test_heartbeat_keeps_a_claim_alive_across_many_leases(orchestrator: Orchestrator) -> None:
    """Given a claim held for four lease periods in this process, the job is never ready again
    while the claim lives, and is gone after it ends."""
    queue = unique("beat")
    orchestrator.declare_queue(queue)
    orchestrator.publish(queue, make_job(1))
    observer = redis_orchestrator(LEASE)
    try:
        with orchestrator.claim(queue) as job:
            assert job is not None
            ended = threading.Event()
            threading.Timer(4 * LEASE, ended.set).start()
            while not ended.is_set():
                assert observer.count_queue_messages(queue) == 0  # counting restores expired leases
                ended.wait(0.25)
        assert observer.count_queue_messages(queue) == 0
        assert (observer.unacked_counts() or {}).get(queue, 0) == 0
    finally:
        observer.close()


def test_two_keyprefix_tenants_never_see_each_other() -> None:
    """Given two apps on one Redis database with different ``global_keyprefix`` values, the same
    queue name is two queues: jobs, in-flight records and listings stay apart."""
    make_client("redis")
    tenants = [Orchestrator.from_url(f"{REDIS_TEST_URL}{unique('tenant')}:") for _ in range(2)]
    first, second = tenants
    queue = unique("shared-name")
    try:
        first.declare_queue(queue, queue_type="priority")
        second.declare_queue(queue, queue_type="stack")  # no mismatch: another tenant's queue
        first.publish_many(queue, [make_job(n) for n in range(3)])
        with first.claim(queue) as job:
            assert job is not None
            assert second.count_queue_messages(queue) == 0
            assert (second.unacked_counts() or {}).get(queue, 0) == 0
            assert (first.unacked_counts() or {}).get(queue) == 1
        assert [spec.describe() for spec in first.list_queues() if spec.name == queue] == ["priority(max_priority=10)"]
        assert [spec.describe() for spec in second.list_queues() if spec.name == queue] == ["stack"]
        second.delete_queue(queue)
        assert first.count_queue_messages(queue) == 2
    finally:
        for tenant in tenants:
            try:
                tenant.delete_queue(queue)
            except KeyError:
                pass
            tenant.close()
