"""At-least-once under real failures: workers killed with SIGKILL, a Redis server restarted,
RabbitMQ connections force-closed, SIGTERM during a job. Real processes, real brokers."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from mindtrace_kombu import Orchestrator, Worker
from mindtrace_kombu.backends.redis import RedisBackend
from mindtrace_kombu.clients import RedisClient

from .conftest import AMQP_URL, make_client, make_job, require_tools, unique

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[1]


def start_worker(url: str, queue: str, log: Path, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.worker_process", url, queue, str(log), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


@contextmanager
def scratch_queue(orchestrator: Orchestrator, prefix: str) -> Iterator[str]:
    """A new fifo queue, deleted (with its dead-letter queue) whatever the test's outcome."""
    queue = unique(prefix)
    orchestrator.declare_queue(queue)
    try:
        yield queue
    finally:
        for name in (queue, f"{queue}.dlq"):
            try:
                orchestrator.delete_queue(name)
            except KeyError:
                pass


def read_log(log: Path) -> tuple[list[str], list[str]]:
    lines = log.read_text().split() if log.exists() else []
    pairs = list(zip(lines[::2], lines[1::2]))
    return [job for kind, job in pairs if kind == "start"], [job for kind, job in pairs if kind == "done"]


def wait_until_done(logs: list[Path], expected: set[str], timeout: float) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        done: Counter[str] = Counter(job for log in logs for job in read_log(log)[1])
        if expected <= set(done) or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_no_job_lost_when_workers_are_killed(backend: str, tmp_path: Path) -> None:
    # Given 2000 jobs and three worker processes
    client = make_client(backend)
    orchestrator = Orchestrator(client)
    queue = unique("crash")
    orchestrator.declare_queue(queue)
    jobs = [make_job(n) for n in range(2000)]
    for start in range(0, len(jobs), 200):
        orchestrator.publish_many(queue, jobs[start : start + 200])
    logs: list[Path] = []
    workers: list[tuple[subprocess.Popen[str], Path]] = []

    def spawn() -> None:
        log = tmp_path / f"worker-{len(logs)}.log"
        logs.append(log)
        workers.append((start_worker(client._url, queue, log, "--sleep", "0.002", "--prefetch", "4"), log))

    killed_logs: list[Path] = []
    try:
        for _ in range(3):
            spawn()
        # When workers are killed with SIGKILL several times mid-run and replaced
        for _ in range(4):
            time.sleep(random.uniform(0.4, 0.8))
            process, log = workers.pop(random.randrange(len(workers)))
            process.kill()
            process.wait()
            killed_logs.append(log)
            spawn()
        done = wait_until_done(logs, {job.id for job in jobs}, timeout=120)
    finally:
        for process, _ in workers:
            process.terminate()
        for process, _ in workers:
            process.wait(timeout=30)
        orchestrator.delete_queue(queue)
    # Expect every job completed at least once ...
    assert {job.id for job in jobs} <= set(done)
    # ... and duplicates only among jobs a killed worker had started but may not have acknowledged
    in_flight_at_kill = {job for log in killed_logs for job in read_log(log)[0]}
    duplicates = {job for job, count in done.items() if count > 1}
    assert duplicates <= in_flight_at_kill
    assert len(duplicates) <= 4 * 4  # kills x prefetch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_redis() -> Iterator[tuple[str, callable]]:  # type: ignore[valid-type]
    """A private redis-server with an fsync-always append-only file, and a function restarting it."""
    require_tools("redis-server")
    port, directory = free_port(), tempfile.mkdtemp(prefix="mindtrace-redis-")
    command = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", "",
        "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
    ]

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return process
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    server = [start()]

    def restart() -> None:
        server[0].terminate()  # SIGTERM: redis flushes the append-only file and exits
        server[0].wait(timeout=10)
        time.sleep(0.5)
        server[0] = start()

    try:
        yield f"redis://127.0.0.1:{port}/0", restart
    finally:
        server[0].terminate()
        server[0].wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def test_redis_restart_loses_no_acknowledged_job(own_redis: tuple[str, callable], tmp_path: Path) -> None:  # type: ignore[valid-type]
    url, restart = own_redis
    orchestrator = Orchestrator(RedisClient(url=url), connection_retries=10)
    queue = unique("restart")
    orchestrator.declare_queue(queue)
    jobs = [make_job(n) for n in range(600)]
    orchestrator.publish_many(queue, jobs[:300])
    log = tmp_path / "worker.log"
    worker = start_worker(url, queue, log, "--sleep", "0.005")
    try:
        time.sleep(0.5)
        restart()  # mid-run
        orchestrator.publish_many(queue, jobs[300:])  # publishing resumes through the restart too
        done = wait_until_done([log], {job.id for job in jobs}, timeout=90)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert {job.id for job in jobs} <= set(done)
    assert orchestrator.count_queue_messages(queue) == 0


def _worker_amqp_connections(pid: int) -> list[str]:
    """RabbitMQ connection pids of the worker process: its local ports (ss) matched to the
    peer ports RabbitMQ lists."""
    sockets = subprocess.run(["ss", "-tnpH", "state", "established", "( dport = :5672 )"],
                             capture_output=True, text=True, check=True).stdout
    ports = {line.split()[2].rsplit(":", 1)[1] for line in sockets.splitlines() if f"pid={pid}," in line}
    listed = subprocess.run(["rabbitmqctl", "list_connections", "peer_port", "pid", "-q", "--no-table-headers"],
                            capture_output=True, text=True, check=True).stdout
    return [row.split()[1] for row in listed.splitlines() if row.split() and row.split()[0] in ports]


def test_rabbitmq_forced_close_resumes_consumption(tmp_path: Path) -> None:
    client = make_client("rabbitmq")
    require_tools("ss", "rabbitmqctl")  # to find and force-close the worker's connection
    orchestrator = Orchestrator(client)
    queue = unique("forced")
    orchestrator.declare_queue(queue)
    jobs = [make_job(n) for n in range(400)]
    orchestrator.publish_many(queue, jobs)
    log = tmp_path / "worker.log"
    worker = start_worker(AMQP_URL, queue, log, "--sleep", "0.005")
    try:
        time.sleep(0.5)
        connections = _worker_amqp_connections(worker.pid)
        closed = [
            subprocess.run(["rabbitmqctl", "close_connection", pid, "test: forced close"], check=False, capture_output=True).returncode
            for pid in connections
        ]
        assert 0 in closed, f"no connection of the worker could be closed: {connections}"
        done = wait_until_done([log], {job.id for job in jobs}, timeout=90)
        assert worker.poll() is None, "the worker died instead of reconnecting"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        orchestrator.delete_queue(queue)
    assert {job.id for job in jobs} <= set(done)


@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_sigterm_finishes_the_job_and_returns_prefetched(backend: str, tmp_path: Path) -> None:
    client = make_client(backend)
    orchestrator = Orchestrator(client)
    with scratch_queue(orchestrator, "term") as queue:
        orchestrator.publish_many(queue, [make_job(n) for n in range(5)])
        log = tmp_path / "worker.log"
        worker = start_worker(client._url, queue, log, "--sleep", "1.5", "--prefetch", "3")
        try:
            deadline = time.monotonic() + 20
            while not read_log(log)[0] and time.monotonic() < deadline:
                time.sleep(0.05)
            worker.send_signal(signal.SIGTERM)  # during the slow job
            out, _ = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
        started, done = read_log(log)
        assert worker.returncode == 0 and "stopped processed=1" in out
        assert started == done and len(done) == 1  # the job in flight completed
        assert orchestrator.count_queue_messages(queue) == 4  # acknowledged; prefetched ones returned
        first = orchestrator.receive_message(queue)
        assert first is not None and first.id != done[0]


def test_redis_raw_bytes_are_dead_lettered_by_the_worker() -> None:
    orchestrator = Orchestrator(make_client("redis"))
    with scratch_queue(orchestrator, "raw") as queue:
        # Given raw bytes that are no Kombu message, put in the store by someone else, before a good job
        assert isinstance(orchestrator.backend, RedisBackend)
        orchestrator.backend.store.put(queue, [(b"\xff\x00 not kombu", 0)])
        orchestrator.publish(queue, make_job(1))
        seen: list[int] = []
        # When a worker drains the queue
        stats = orchestrator.consume(queue, lambda job: seen.append(job.payload.input.value), until_empty=True)
        # Expect the job processed and the bytes dead-lettered unchanged, with the reason
        assert seen == [1] and stats.dead_lettered == 1
        [letter] = orchestrator.dead_letters(queue)
        assert letter.body == b"\xff\x00 not kombu" and "not a Kombu message" in letter.reason


def test_idle_redis_worker_waits_instead_of_polling(own_redis: tuple[str, callable]) -> None:  # type: ignore[valid-type]
    """Given a worker with 4 threads, one of them running a 2 s job and its queue otherwise
    empty, expect a handful of Redis commands while the job runs (blocking waits, no polling)."""
    url, _ = own_redis
    orchestrator = Orchestrator(RedisClient(url=url))
    server = redis.Redis.from_url(url)
    queue = unique("idle")
    orchestrator.declare_queue(queue)
    started, release = threading.Event(), threading.Event()

    def handler(job: object) -> None:
        started.set()
        release.wait(10)

    worker = Worker(orchestrator, queue, handler, concurrency=4)
    runner = threading.Thread(target=worker.run)
    orchestrator.publish(queue, make_job(1))
    runner.start()
    assert started.wait(10)
    before = server.info("stats")["total_commands_processed"]
    window = threading.Timer(2.0, release.set)
    window.start()
    window.join()
    during = server.info("stats")["total_commands_processed"] - before - 1  # minus this INFO
    worker.stop()
    runner.join(10)
    assert not runner.is_alive() and worker.stats.completed == 1
    # each idle cycle is one take script (its ~8 inner commands count too) and one BRPOP of up to
    # 1 s: about 20 in 2 s, 30 under load; polling would be hundreds
    assert during < 60, f"{during} Redis commands in 2 s while idle"
    orchestrator.close()
