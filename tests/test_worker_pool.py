"""Handlers in child processes (``pool="processes"``), per-job time limits on both pools, and the
Worker's options refused before the broker is used. Real brokers, real processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mindtrace_kombu import InvalidArgument, Job, JobOutput, Orchestrator, Worker
from mindtrace_kombu.execution import start
from mindtrace_kombu.process_pool import ProcessPool
from mindtrace_kombu.queues import dead_letter_queue_name
from mindtrace_kombu.worker import JobEvent

from . import worker_handlers
from .conftest import make_job

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("mindtrace-jobs")
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens there: touching the broker would fail


class Tripled(JobOutput):
    tripled: int
    pid: int


def triple(job: Job) -> Tripled:
    return Tripled(tripled=job.payload.input.value * 3, pid=os.getpid())  # type: ignore[attr-defined]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- processes -----------------------------------------------------------------------------------


def test_processes_run_handlers_in_children_and_send_outputs_back(orchestrator: Orchestrator, queue_name: str) -> None:
    # Given twelve jobs
    orchestrator.declare_queue(queue_name)
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(12)])
    events: list[JobEvent] = []
    # When a worker with two child processes drains the queue
    stats = orchestrator.consume(
        queue_name, triple, until_empty=True, pool="processes", concurrency=2, on_event=events.append
    )
    # Expect every job completed in a child, its typed output back on the job, and acknowledged
    assert stats.completed == 12
    outputs = [event.job.payload.output for event in events]  # type: ignore[union-attr]
    assert all(isinstance(output, Tripled) for output in outputs)
    assert sorted(output.tripled for output in outputs) == [n * 3 for n in range(12)]  # type: ignore[union-attr]
    pids = {output.pid for output in outputs}  # type: ignore[union-attr]
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert orchestrator.count_queue_messages(queue_name) == 0
    assert (orchestrator.unacked_counts() or {}).get(queue_name, 0) == 0


def test_a_handler_error_in_a_child_is_retried_then_dead_lettered(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(7))

    def broken(job: Job) -> None:
        raise ValueError(f"bad input {job.payload.input.value}")  # type: ignore[attr-defined]

    stats = orchestrator.consume(queue_name, broken, until_empty=True, pool="processes", max_retries=1, retry_backoff=0.01)
    assert (stats.retried, stats.dead_lettered) == (1, 1)
    [letter] = orchestrator.dead_letters(queue_name)
    assert letter.error == "ValueError: bad input 7" and letter.attempts == 2
    assert 'raise ValueError(f"bad input' in letter.headers["x-mindtrace-traceback"]
    orchestrator.delete_queue(dead_letter_queue_name(queue_name))


def test_a_child_that_dies_is_replaced_and_its_job_retried(orchestrator: Orchestrator, queue_name: str) -> None:
    # Given four jobs, the first of which kills its process on its first attempt
    orchestrator.declare_queue(queue_name)
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(4)])

    def handler(job: Job) -> Tripled:
        if job.payload.input.value == 0 and job.attempts == 1:  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGKILL)
        return triple(job)

    events: list[JobEvent] = []
    # When one child runs them
    stats = orchestrator.consume(
        queue_name, handler, until_empty=True, pool="processes", max_retries=1, retry_backoff=0.01, on_event=events.append
    )
    # Expect the job failed as lost, then done by the replacement child, like every other job
    [retried] = [event for event in events if event.outcome == "retried"]
    assert retried.error == "WorkerLostError: the process running the job exited (exit code -9)"
    assert stats.completed == 4 and orchestrator.count_queue_messages(queue_name) == 0


def test_hard_time_limit_kills_the_child_and_the_worker_goes_on(
    orchestrator: Orchestrator, queue_name: str, tmp_path: Path
) -> None:
    # Given an endless job (a sleep loop) among quick ones
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(0, label="endless"))
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(1, 5)])

    def handler(job: Job) -> Tripled:
        if job.payload.input.label == "endless":  # type: ignore[attr-defined]
            (tmp_path / str(os.getpid())).touch()
            while True:
                time.sleep(0.01)
        return triple(job)

    # When two children run them with a 0.5 s limit and one retry
    stats = orchestrator.consume(
        queue_name, handler, until_empty=True, pool="processes", concurrency=2, time_limit=0.5,
        max_retries=1, retry_backoff=0.01,
    )
    # Expect the endless job killed twice, then dead-lettered; the others completed
    assert (stats.completed, stats.retried, stats.dead_lettered) == (4, 1, 1)
    [letter] = orchestrator.dead_letters(queue_name)
    assert letter.error == "TimeLimitExceeded: the job ran longer than its time limit of 0.5 s; its process was killed"
    killed = [int(path.name) for path in tmp_path.iterdir()]
    assert len(killed) == 2 and not any(alive(pid) for pid in killed)
    orchestrator.delete_queue(dead_letter_queue_name(queue_name))


def test_spawned_children_import_the_handler_by_name() -> None:
    pool = ProcessPool(worker_handlers.double, 1, context=multiprocessing.get_context("spawn"))
    try:
        job = make_job(21)
        result = pool.run(job, start(job))
    finally:
        pool.close()
    output = result.job.payload.output
    assert result.error is None and isinstance(output, worker_handlers.Doubled)
    assert output.doubled == 42 and output.pid != os.getpid()


# -- threads ---------------------------------------------------------------------------------------


def test_soft_time_limit_fails_the_job_and_ignores_its_late_result(orchestrator: Orchestrator, queue_name: str) -> None:
    # Given a job whose handler blocks until released, among quick ones
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(0, label="slow"))
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(1, 4)])
    release, finished = threading.Event(), threading.Event()

    def handler(job: Job) -> Tripled:
        if job.payload.input.label == "slow":  # type: ignore[attr-defined]
            release.wait(30)
            finished.set()
        return triple(job)

    events: list[JobEvent] = []
    # When threads run them with a 0.3 s limit and no retries
    stats = orchestrator.consume(
        queue_name, handler, until_empty=True, concurrency=2, time_limit=0.3, max_retries=0, on_event=events.append
    )
    # Expect the slow job dead-lettered at its limit while the others completed
    assert (stats.completed, stats.dead_lettered) == (3, 1)
    [letter] = orchestrator.dead_letters(queue_name)
    assert letter.error is not None and letter.error.startswith(
        "TimeLimitExceeded: the job ran longer than its time limit of 0.3 s; its thread cannot be stopped"
    )
    # and, once its thread finishes, its result changes nothing
    release.set()
    assert finished.wait(10)
    assert len(events) == 4 and stats.processed == 4
    assert orchestrator.count_queue_messages(queue_name) == 0
    orchestrator.delete_queue(dead_letter_queue_name(queue_name))


# -- options ---------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("concurrency", 0),
    ("concurrency", 2.5),
    ("prefetch", 0),
    ("prefetch", -1),
    ("max_retries", -1),
    ("retry_backoff", -0.5),
    ("retry_backoff", float("nan")),
    ("retry_backoff_max", float("inf")),
    ("time_limit", 0),
    ("time_limit", float("nan")),
    ("shutdown_grace", -1),
    ("shutdown_grace", float("inf")),
    ("max_message_bytes", 0),
    ("pool", "greenlets"),
]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS)
def test_options_out_of_range_are_refused_before_the_broker_is_used(name: str, value: object) -> None:
    # Given an orchestrator whose broker cannot be reached (using it would raise BrokerUnavailable)
    with Orchestrator.from_url(UNREACHABLE, connect_timeout=0.5) as orchestrator:
        # Expect the Worker and consume() to refuse the option, naming it
        with pytest.raises(InvalidArgument) as refused:
            Worker(orchestrator, "q", print, **{name: value})  # type: ignore[arg-type]
        assert refused.value.name == name
        with pytest.raises(InvalidArgument):
            orchestrator.consume("q", print, **{name: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [("--concurrency", "0"), ("--prefetch", "-1"), ("--max-retries", "-1"), ("--time-limit", "nan"), ("--shutdown-grace", "-5")],
)
def test_cli_refuses_options_out_of_range(option: str, value: str) -> None:
    result = subprocess.run(
        [str(SCRIPT), "--broker", UNREACHABLE, "worker", "tests.worker_handlers:double", "-Q", "q", option, value],
        cwd=ROOT, capture_output=True, text=True, timeout=50, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for {option}" in result.stderr and "invalid" in result.stderr
