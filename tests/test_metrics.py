"""Prometheus metrics: real workers on real brokers, scraped over HTTP, counted exactly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mindtrace_kombu import Job, Orchestrator, core
from mindtrace_kombu.core import OutgoingMessage
from mindtrace_kombu.metrics import WorkerMetrics, serve
from mindtrace_kombu.worker import Worker

from .conftest import REDIS_TEST_URL, free_port, make_job, unique, wait_until
from .worker_handlers import by_label

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("mindtrace-jobs")
#: Jobs by label: 3 succeed, ``flaky`` fails once, ``doomed`` fails both attempts (max_retries=1).
LABELS = ["ok", "ok", "ok", "flaky", "doomed"]
JOB_COUNTERS = ("published", "processed", "failed", "retried", "dead_lettered")

Samples = dict[tuple[str, str | None], float]


def scrape(port: int) -> Samples:
    """``/metrics`` as ``{(sample name, queue label): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, sample.labels.get("queue")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def try_scrape(port: int) -> Samples | None:
    """None while nothing listens on ``port`` yet."""
    try:
        return scrape(port)
    except (urllib.error.URLError, ConnectionError):
        return None


def job_counts(samples: Samples, queue: str) -> dict[str, float]:
    return {name: samples.get((f"mindtrace_jobs_{name}_total", queue), 0.0) for name in JOB_COUNTERS}


def queue_gauges(samples: Samples, queue: str) -> dict[str, float | None]:
    return {name: samples.get((f"mindtrace_queue_{name}", queue)) for name in ("ready", "unacked", "dead_letters")}


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_worker_counts_every_outcome_exactly(orchestrator: Orchestrator) -> None:
    """Given 3 jobs that succeed, 1 that fails once and 1 that always fails, published while a
    worker's metrics are open, expect the scraped counters to match the outcomes exactly, the
    queue gauges to match the broker, and the publish hook to be gone once the metrics close."""
    queue = unique("metrics")
    orchestrator.declare_queue(queue)
    worker = Worker(orchestrator, queue, by_label, max_retries=1, retry_backoff=0)
    metrics = WorkerMetrics(worker, queue_interval=0)
    port = free_port()
    server = serve(metrics.registry, port)
    try:
        orchestrator.publish_many(queue, [make_job(i, label=label) for i, label in enumerate(LABELS)])
        stats = worker.run(until_empty=True)
        samples = scrape(port)
    finally:
        server.shutdown()
        metrics.close()
    assert core.on_published is None
    assert (stats.completed, stats.retried, stats.dead_lettered) == (4, 2, 1)
    # 5 published by the test + 2 retry copies; 7 handler runs, of which 3 failed
    assert job_counts(samples, queue) == {"published": 7, "processed": 7, "failed": 3, "retried": 2, "dead_lettered": 1}
    assert samples[("mindtrace_job_duration_seconds_count", queue)] == 7
    assert queue_gauges(samples, queue) == {"ready": 0, "unacked": 0, "dead_letters": 1}
    assert samples[("mindtrace_worker_jobs_in_flight", None)] == 0
    assert samples[("mindtrace_worker_consumers", queue)] == 0  # run() has returned
    assert samples[("mindtrace_broker_up", None)] == 1


@pytest.mark.parametrize("backend", ["local"])
def test_in_flight_and_consumer_gauges_follow_a_running_job(orchestrator: Orchestrator) -> None:
    """Given a worker whose handler waits, expect one job in flight and one consumer while it
    runs, and none once it is released and the worker stopped."""
    queue = unique("inflight")
    orchestrator.declare_queue(queue)
    release = threading.Event()
    worker = Worker(orchestrator, queue, lambda job: release.wait(30))
    metrics = WorkerMetrics(worker, queue_interval=0)
    port = free_port()
    server = serve(metrics.registry, port)
    runner = threading.Thread(target=worker.run)
    try:
        orchestrator.publish(queue, make_job(1))
        runner.start()
        running = wait_until(
            lambda: (s := scrape(port))[("mindtrace_worker_jobs_in_flight", None)] == 1 and s, what="a job in flight"
        )
        assert running[("mindtrace_worker_consumers", queue)] == 1
        release.set()
        wait_until(lambda: job_counts(scrape(port), queue)["processed"] == 1, what="the job processed")
        worker.stop()
        runner.join(30)
        assert not runner.is_alive()
        stopped = scrape(port)
    finally:
        release.set()
        worker.stop()
        server.shutdown()
        metrics.close()
    assert stopped[("mindtrace_worker_jobs_in_flight", None)] == 0
    assert stopped[("mindtrace_worker_consumers", queue)] == 0


def run_cli(*args: str) -> subprocess.Popen[str]:
    """``mindtrace-jobs --broker REDIS_TEST_URL ARGS...`` in the background, from the repository
    root (so ``tests.worker_handlers`` imports)."""
    return subprocess.Popen(
        [str(SCRIPT), "--broker", REDIS_TEST_URL, *args], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def stopped(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM the process; its exit code and stderr."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr


@pytest.mark.parametrize("backend", ["redis"])
def test_cli_worker_serves_its_metrics(orchestrator: Orchestrator) -> None:
    """Given 2 jobs that succeed and 1 that always fails, consumed by ``mindtrace-jobs worker
    --metrics-port`` in another process, expect its /metrics to count them exactly (it published
    only the retry copy), and the worker to stop cleanly."""
    queue = unique("climetrics")
    orchestrator.declare_queue(queue)
    orchestrator.publish_many(queue, [make_job(i, label=label) for i, label in enumerate(["ok", "ok", "doomed"])])
    port = free_port()
    process = run_cli("worker", "tests.worker_handlers:by_label", "-Q", queue, "--max-retries", "1", "--metrics-port", str(port))
    try:
        samples = wait_until(
            lambda: (s := try_scrape(port)) and job_counts(s, queue)["dead_lettered"] == 1 and s, what="the jobs settled"
        )
    finally:
        code, stderr = stopped(process)
    assert job_counts(samples, queue) == {"published": 1, "processed": 4, "failed": 2, "retried": 1, "dead_lettered": 1}
    assert samples[("mindtrace_job_duration_seconds_count", queue)] == 4
    assert code == 0, stderr
    assert f"metrics on http://127.0.0.1:{port}/metrics" in stderr


@pytest.mark.parametrize("backend", ["redis"])
def test_exporter_gauges_match_the_queue_counts(orchestrator: Orchestrator) -> None:
    """Given a queue with 2 ready jobs, 1 in flight and 1 dead letter, expect ``exporter``'s
    gauges to say so, with ``--queue`` and when it lists every queue (``<q>.dlq`` folded in)."""
    queue = unique("exporter")
    orchestrator.declare_queue(queue)
    orchestrator.publish_many(queue, [make_job(i) for i in range(3)])
    orchestrator.dead_letter(queue, OutgoingMessage(make_job(9), {}), "test")
    named, every = free_port(), free_port()
    processes = [
        run_cli("exporter", "--port", str(named), "--queue", queue, "--interval", "0"),
        run_cli("exporter", "--port", str(every), "--interval", "0"),
    ]
    try:
        with orchestrator.claim(queue) as job:
            assert isinstance(job, Job)
            expected = {"ready": orchestrator.count_queue_messages(queue), "unacked": 1, "dead_letters": 1}
            assert expected["ready"] == 2
            for port in (named, every):
                samples = wait_until(partial(try_scrape, port), what=f"the exporter on port {port}")
                assert queue_gauges(samples, queue) == expected
                assert samples[("mindtrace_broker_up", None)] == 1
                assert ("mindtrace_queue_ready", f"{queue}.dlq") not in samples
    finally:
        results = [stopped(process) for process in processes]
    assert [code for code, _ in results] == [128 + signal.SIGTERM] * 2, results


def test_metrics_without_prometheus_client_say_what_to_install() -> None:
    """Given no prometheus_client, expect ``exporter`` to exit 1 naming the extra to install."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None; from mindtrace_kombu.cli import main; "
        "sys.argv = ['mindtrace-jobs', '--broker', 'memory://', 'exporter', '--port', '0']; main()"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert 'pip install "mindtrace-kombu[metrics]"' in result.stderr
