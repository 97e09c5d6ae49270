"""A worker under a supervisor: started before its queues exist, stopped warm (jobs in progress
finish, prefetched ones go back) and cold (a second signal, or the grace running out: stuck jobs go
back, children are killed). Real worker processes receive real SIGTERM/SIGINT; every wait polls
a log file, the process output or a queue count, with a deadline."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mindtrace_kombu import Job, Orchestrator, QueueNotFound, Worker
from mindtrace_kombu.cli import commands_worker
from mindtrace_kombu.worker import SHUTDOWN_GRACE, WorkerStats

from . import worker_handlers
from .conftest import broker_url, make_client, make_job, unique
from .test_worker_pool import alive
from .worker_handlers import LOG, RELEASE, read_log

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("mindtrace-jobs")
POOLS = ["threads", "processes"]


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The handlers' log (in this process, and in the worker processes started by the tests)."""
    path = tmp_path / "handlers.log"
    monkeypatch.setenv(LOG, str(path))
    monkeypatch.setenv(RELEASE, str(tmp_path / "release"))
    return path


@contextmanager
def running(worker: Worker, until_empty: bool = False) -> Iterator[tuple[threading.Thread, list[WorkerStats]]]:
    """``worker.run()`` on a thread; at exit the worker is stopped cold and the thread joined."""
    stats: list[WorkerStats] = []
    thread = threading.Thread(target=lambda: stats.append(worker.run(until_empty)), daemon=True)
    thread.start()
    try:
        yield thread, stats
    finally:
        worker.stop(cold=True)
        thread.join(15)


class WorkerProcess:
    """``mindtrace-jobs worker tests.worker_handlers:HANDLER`` in a process of its own; its output
    lines are collected by reader threads."""

    def __init__(self, broker: str, queue: str, handler: str, *options: str) -> None:
        self.process = subprocess.Popen(
            [str(SCRIPT), "--broker", broker, "worker", f"tests.worker_handlers:{handler}", "-Q", queue, *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream,), daemon=True)
                         for stream in (self.process.stdout, self.process.stderr)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text in self.output or self.process.poll() is not None, timeout, f"output {text!r}")
        assert text in self.output, self.output

    def exit_code(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit (it is killed if it does not) and for its last output."""
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(10)
        return code


@pytest.fixture
def broker_queue(request: pytest.FixtureRequest) -> Iterator[tuple[Orchestrator, str, str]]:
    """An orchestrator on a shared broker (indirect parameter: redis or rabbitmq), its URL and a
    queue name; the queue is deleted afterwards."""
    make_client(request.param)
    url, queue = broker_url(request.param), unique("shutdown")
    with Orchestrator.from_url(url) as orchestrator:
        yield orchestrator, url, queue
        try:
            orchestrator.delete_queue(queue)
        except QueueNotFound:
            pass


SHARED_BROKERS = pytest.mark.parametrize("broker_queue", ["redis", "rabbitmq"], indirect=True)


# -- in process: stop() and stop(cold=True) --------------------------------------------------------


@pytest.mark.parametrize("pool", POOLS)
def test_cold_stop_gives_a_stuck_job_back_and_returns(
    orchestrator: Orchestrator, queue_name: str, pool: str, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mindtrace_kombu.worker")
    # Given three jobs taken by a worker whose handler never returns
    orchestrator.declare_queue(queue_name)
    jobs = [make_job(n) for n in range(3)]
    orchestrator.publish_many(queue_name, jobs)
    worker = Worker(orchestrator, queue_name, worker_handlers.stuck, pool=pool, prefetch=3)  # type: ignore[arg-type]
    with running(worker) as (thread, stats):
        wait_until(lambda: read_log(log)[0], what="the first job started")
        # When it is stopped warm, expect it to wait for the stuck job
        worker.stop()
        wait_until(lambda: "warm shutdown" in caplog.text, what="the warm shutdown")
        assert thread.is_alive()
        # When it is stopped cold, expect run() to return at once with the stuck job back in the queue
        worker.stop(cold=True)
        thread.join(10)
        assert not thread.is_alive()
    assert stats[0].returned == 3 and stats[0].processed == 0
    assert orchestrator.count_queue_messages(queue_name) == 3
    first = orchestrator.receive_message(queue_name)
    assert first is not None and first.id == jobs[0].id  # first in line
    if pool == "processes":  # its child was killed
        [pid] = read_log(log)[0].values()
        assert pid != os.getpid() and not alive(pid)


def test_a_warm_stop_turns_cold_when_the_grace_runs_out(orchestrator: Orchestrator, queue_name: str, log: Path) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(1))
    worker = Worker(orchestrator, queue_name, worker_handlers.stuck, shutdown_grace=0.3)
    with running(worker) as (thread, stats):
        wait_until(lambda: read_log(log)[0], what="the job started")
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()
    assert stats[0].returned == 1 and orchestrator.count_queue_messages(queue_name) == 1


# -- real worker processes, real signals ---------------------------------------------------------


@SHARED_BROKERS
@pytest.mark.parametrize("pool", POOLS)
def test_sigterm_lets_the_job_in_progress_finish_and_returns_prefetched_ones(
    broker_queue: tuple[Orchestrator, str, str], pool: str, log: Path
) -> None:
    orchestrator, url, queue = broker_queue
    # Given four jobs, and a worker that has taken three and runs the first until released
    orchestrator.declare_queue(queue)
    jobs = [make_job(n) for n in range(4)]
    orchestrator.publish_many(queue, jobs)
    worker = WorkerProcess(url, queue, "until_released", "--pool", pool, "--prefetch", "3")
    wait_until(lambda: read_log(log)[0], what="the first job started")
    # When it gets SIGTERM, expect it to wait for the job in progress
    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for("warm shutdown: waiting up to 30 s for 1 job(s) in progress")
    assert worker.process.poll() is None
    # When the job in progress is released, expect it completed and acknowledged, and a clean exit
    Path(os.environ[RELEASE]).touch()
    assert worker.exit_code() == 0, worker.output
    started, done = read_log(log)
    assert list(started) == done == [jobs[0].id]
    assert "1 processed (1 completed, 0 retried, 0 dead-lettered, 2 returned to the queue)" in worker.output
    assert orchestrator.count_queue_messages(queue) == 3
    received = [orchestrator.receive_message(queue) for _ in jobs[1:]]
    assert {job.id for job in received if job is not None} == {job.id for job in jobs[1:]}


@SHARED_BROKERS
@pytest.mark.parametrize("pool", POOLS)
def test_a_second_signal_gives_the_stuck_job_back_and_exits(
    broker_queue: tuple[Orchestrator, str, str], pool: str, log: Path
) -> None:
    orchestrator, url, queue = broker_queue
    # Given a worker stuck in a job, with another prefetched
    orchestrator.declare_queue(queue)
    jobs = [make_job(n) for n in range(3)]
    orchestrator.publish_many(queue, jobs)
    worker = WorkerProcess(url, queue, "stuck", "--pool", pool, "--prefetch", "2")
    wait_until(lambda: read_log(log)[0], what="the first job started")
    # When SIGTERM starts a warm shutdown and SIGINT follows
    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for("warm shutdown")
    worker.process.send_signal(signal.SIGINT)
    # Expect the worker to exit at once, with the stuck job back in the queue, first in line
    assert worker.exit_code(15) == 0, worker.output
    assert "cold shutdown: 1 job(s) in progress given back" in worker.output
    assert orchestrator.count_queue_messages(queue) == 3
    first = orchestrator.receive_message(queue)
    assert first is not None and first.id == jobs[0].id
    [pid] = read_log(log)[0].values()
    assert not alive(pid)  # the worker itself, or its child


@SHARED_BROKERS
def test_the_grace_running_out_kills_the_stuck_child(broker_queue: tuple[Orchestrator, str, str], log: Path) -> None:
    orchestrator, url, queue = broker_queue
    orchestrator.declare_queue(queue)
    orchestrator.publish(queue, make_job(1))
    worker = WorkerProcess(url, queue, "stuck", "--pool", "processes", "--shutdown-grace", "0.5")
    wait_until(lambda: read_log(log)[0], what="the job started")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.exit_code(15) == 0, worker.output
    assert orchestrator.count_queue_messages(queue) == 1
    [pid] = read_log(log)[0].values()
    assert not alive(pid)


# -- start order: waiting for a queue, or declaring it ---------------------------------------------


def test_the_cli_shutdown_grace_default_is_the_libraries() -> None:
    assert commands_worker.SHUTDOWN_GRACE == SHUTDOWN_GRACE


def test_a_worker_waits_for_its_queue(
    orchestrator: Orchestrator, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mindtrace_kombu.worker")
    done: list[Job] = []
    worker = Worker(orchestrator, queue_name, done.append, wait_for_queues=True)
    with running(worker, until_empty=True) as (thread, stats):
        wait_until(lambda: "waiting for queue" in caplog.text, what="the worker waiting")
        orchestrator.declare_queue(queue_name)
        orchestrator.publish(queue_name, make_job(1))
        thread.join(30)
        assert not thread.is_alive()
    assert stats[0].completed == 1 and [job.payload.input.value for job in done] == [1]  # type: ignore[attr-defined]


def test_stop_ends_the_wait_for_a_queue(orchestrator: Orchestrator, queue_name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mindtrace_kombu.worker")
    worker = Worker(orchestrator, queue_name, print, wait_for_queues=True)
    with running(worker) as (thread, stats):
        wait_until(lambda: "waiting for queue" in caplog.text, what="the worker waiting")
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()
    assert stats[0].processed == 0


def test_a_worker_declares_its_missing_queue(orchestrator: Orchestrator, queue_name: str) -> None:
    stats = orchestrator.consume(queue_name, print, until_empty=True, declare_queues=True)
    assert stats.processed == 0 and orchestrator.queue_spec(queue_name).queue_type.value == "fifo"


@SHARED_BROKERS
def test_cli_worker_waits_for_its_queue_and_is_stopped_by_sigterm_while_waiting(
    broker_queue: tuple[Orchestrator, str, str],
) -> None:
    orchestrator, url, queue = broker_queue
    # A burst worker started before its queue exists waits, then drains it once it is declared
    burst = WorkerProcess(url, queue, "double", "--wait-for-queue", "--burst")
    burst.wait_for("waiting for queue")
    orchestrator.declare_queue(queue)
    orchestrator.publish_many(queue, [make_job(1), make_job(2)])
    assert burst.exit_code() == 0, burst.output
    assert "2 processed (2 completed" in burst.output
    # A worker waiting for a queue stops on SIGTERM
    other = unique("shutdown")
    waiting = WorkerProcess(url, other, "double", "--wait-for-queue")
    waiting.wait_for("waiting for queue")
    waiting.process.send_signal(signal.SIGTERM)
    assert waiting.exit_code(15) == 0, waiting.output


@SHARED_BROKERS
def test_cli_worker_on_a_missing_queue_exits_3_or_declares_it(broker_queue: tuple[Orchestrator, str, str]) -> None:
    orchestrator, url, queue = broker_queue
    missing = WorkerProcess(url, queue, "double", "--burst")
    assert missing.exit_code() == 3 and "does not exist" in missing.output
    declaring = WorkerProcess(url, queue, "double", "--declare", "--burst")
    assert declaring.exit_code() == 0, declaring.output
    assert orchestrator.count_queue_messages(queue) == 0
