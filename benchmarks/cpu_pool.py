"""CPU-bound handlers: a worker with 4 child processes against one with 4 threads, on the same jobs.

Each job runs a pure-Python loop calibrated to take about 50 ms here. Threads share the
interpreter lock, so they run such loops one at a time; child processes run them side by side, up
to the number of CPU cores. The processes/threads ratio is therefore bounded by the core count
(noted on each row), not by the 4 workers. Rows are measured on the local backend, so the broker
adds nothing but its bookkeeping.
"""

from __future__ import annotations

import os
import time
from functools import partial

from benchmarks.harness import Result, Scenario, Settings, time_total
from benchmarks.names import CPU_PROCESSES, CPU_THREADS
from benchmarks.project import bench_job
from mindtrace_kombu import Job, Orchestrator, Worker

JOB_SECONDS = 0.05
WORKERS = 4
#: Jobs per pool: the run's ``n``, capped (each job costs 50 ms of CPU).
MAX_JOBS = 48


def spin(iterations: int) -> int:
    """Pure-Python arithmetic that holds the interpreter lock throughout."""
    total = 0
    for number in range(iterations):
        total += number * number % 7
    return total


def calibrate(seconds: float) -> int:
    """Return how many :func:`spin` iterations take about ``seconds`` on this machine."""
    iterations = 10_000
    while True:
        start = time.perf_counter()
        spin(iterations)
        elapsed = time.perf_counter() - start
        if elapsed > 0.02:
            return max(1, int(iterations * seconds / elapsed))
        iterations *= 2


def _drain(worker: Worker) -> int:
    return worker.run(until_empty=True).completed


def cpu_bound(s: Settings, backend: str) -> list[Result]:
    """Drain the same number of CPU-bound jobs with 4 threads, then with 4 child processes."""
    count = min(s.n, MAX_JOBS)
    iterations = calibrate(JOB_SECONDS)
    note = f"{count} jobs of {JOB_SECONDS * 1000:.0f} ms CPU, {os.cpu_count()} CPU cores"

    def handler(job: Job) -> None:
        spin(iterations)

    results = []
    for pool, name in (("threads", CPU_THREADS), ("processes", CPU_PROCESSES)):
        with Orchestrator() as orchestrator:
            queue = s.queue_name(f"cpu-{pool}")
            orchestrator.declare_queue(queue)
            orchestrator.publish_many(queue, [bench_job() for _ in range(count)])
            worker = Worker(orchestrator, queue, handler, pool=pool, concurrency=WORKERS)  # type: ignore[arg-type]
            results.append(time_total(backend, name, partial(_drain, worker), note=note))
    return results


def scenarios(backend: str) -> list[Scenario]:
    """The CPU-bound pool comparison, on the local backend only."""
    if backend != "local":
        return []
    return [Scenario("project cpu-bound worker, processes vs threads", partial(cpu_bound, backend=backend))]
