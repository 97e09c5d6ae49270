"""The project's scenarios, written against the Orchestrator API of the README.

Importing this module imports ``mindtrace_kombu``; ``benchmarks.__main__`` reports the project rows
as unavailable when that fails. Jobs are built before the clock starts, as the baselines' bodies
are: the rows time the queue operations. Each job carries :class:`BenchInput` with 900 characters
of data (about 1.2 KB encoded).
"""

from __future__ import annotations

import importlib
import itertools
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import ModuleType
from typing import Literal

from benchmarks.harness import (
    Result,
    Scenario,
    Settings,
    Skipped,
    from_samples,
    time_batched,
    time_each,
    time_total,
)
from benchmarks.names import (
    PICKUP_LATENCY,
    PRIORITY_BIG,
    PRIORITY_SMALL,
    PUBLISH,
    PUBLISH_MANY,
    RECEIVE,
    WORKER_CONSUME,
    WORKER_CONSUME_NO_RESULTS,
)
from mindtrace_kombu import Job, JobInput, JobSchema, Orchestrator

MAX_PRIORITY = 10
#: Backlog jobs are published in batches of this size and carry one character of data: only
#: their number matters to the cost being measured.
FILL_BATCH = 1_000
#: Jobs timed one at a time from publish to handler by :func:`pickup_latency`.
LATENCY_SAMPLES = 200
#: Seconds to wait for one job to reach a worker before the run is declared broken.
PICKUP_TIMEOUT = 10.0


class BenchInput(JobInput):
    """The benchmark job's input."""

    data: str


def bench_job(data: str = "x" * 900) -> Job:
    """Build one benchmark job."""
    return Job(name="bench", payload=JobSchema(name="bench", input=BenchInput(data=data)))


def _orchestrator(s: Settings, backend: str, results: Literal[False] | None = None) -> Orchestrator:
    """Return an in-process orchestrator for ``local``, else one on the run's broker URL;
    ``results=False``: without a result store (None: the backend's default)."""
    if backend == "local":
        return Orchestrator(results=results)
    urls = {"redis": s.redis_url, "rabbitmq": s.amqp_url, "rediscluster": s.cluster_url}
    return Orchestrator.from_url(str(urls[backend]), results=results)


@contextmanager
def declared(
    s: Settings,
    backend: str,
    scenario: str,
    queue_type: str = "fifo",
    max_priority: int | None = None,
    results: Literal[False] | None = None,
) -> Iterator[tuple[Orchestrator, str]]:
    """Yield an orchestrator on ``backend`` and a queue declared for ``scenario``; delete both after."""
    queue = s.queue_name(f"project-{scenario}-{backend}")
    with _orchestrator(s, backend, results) as orchestrator:
        orchestrator.declare_queue(queue, queue_type=queue_type, max_priority=max_priority)
        try:
            yield orchestrator, queue
        finally:
            orchestrator.delete_queue(queue)


def _receive(orchestrator: Orchestrator, queue: str) -> Job:
    """Receive one job; an empty queue here means a published job went missing."""
    job = orchestrator.receive_message(queue)
    if job is None:
        raise RuntimeError(f"queue {queue!r} is empty although jobs were published to it")
    return job


def expect_count(orchestrator: Orchestrator, queue: str, expected: int) -> None:
    """Check ``count_queue_messages``, which the README makes exact right after publish returns."""
    count = orchestrator.count_queue_messages(queue)
    if count != expected:
        raise RuntimeError(f"queue {queue!r} holds {count} jobs, expected {expected}")


def queue_ops(s: Settings, backend: str) -> list[Result]:
    """``publish``, ``publish_many`` (batches of ``s.batch``) and ``receive_message`` on a fifo queue."""
    calls = math.ceil(s.n / s.batch)
    jobs = iter([bench_job() for _ in range(s.n + 1)])
    batches = iter([[bench_job() for _ in range(s.batch)] for _ in range(calls)])
    with declared(s, backend, "ops") as (orchestrator, queue):
        publish = time_each(
            backend, PUBLISH, lambda: orchestrator.publish(queue, next(jobs)), s.n, warmup=1
        )
        publish_many = time_batched(
            backend,
            PUBLISH_MANY,
            lambda size: orchestrator.publish_many(queue, next(batches)),
            s.n,
            s.batch,
            note=f"batch {s.batch}",
        )
        expect_count(orchestrator, queue, s.n + 1 + calls * s.batch)
        receive = time_each(backend, RECEIVE, partial(_receive, orchestrator, queue), s.n)
    return [publish, publish_many, receive]


def _fill(orchestrator: Orchestrator, queue: str, count: int) -> None:
    """Publish ``count`` one-character jobs, each batch at the next priority in 0..MAX_PRIORITY."""
    for index, start in enumerate(range(0, count, FILL_BATCH)):
        jobs = [bench_job("f") for _ in range(min(FILL_BATCH, count - start))]
        orchestrator.publish_many(queue, jobs, priority=index % (MAX_PRIORITY + 1))


def _publish_receive(
    orchestrator: Orchestrator, queue: str, backend: str, name: str, s: Settings, backlog: int
) -> Result:
    """Time ``s.n`` pairs of publish (priorities cycling) and receive over a steady backlog."""
    jobs = iter([bench_job() for _ in range(s.n)])
    priorities = itertools.cycle(range(MAX_PRIORITY + 1))

    def pair() -> None:
        orchestrator.publish(queue, next(jobs), priority=next(priorities))
        _receive(orchestrator, queue)

    return time_each(backend, name, pair, s.n, note=f"backlog {backlog:,}")


def priority_cost(s: Settings, backend: str) -> list[Result]:
    """Cost of publish+receive on a priority queue with a small and then a large backlog.

    The Redis store's scores bound the growth at O(log n) (docs/architecture.md), so the large/small cost ratio should stay small.
    """
    with declared(s, backend, "priority", "priority", MAX_PRIORITY) as (orchestrator, queue):
        _fill(orchestrator, queue, s.small_backlog)
        small = _publish_receive(orchestrator, queue, backend, PRIORITY_SMALL, s, s.small_backlog)
        _fill(orchestrator, queue, s.big_backlog - s.small_backlog)
        expect_count(orchestrator, queue, s.big_backlog)
        big = _publish_receive(orchestrator, queue, backend, PRIORITY_BIG, s, s.big_backlog)
    return [small, big]


# --- Worker scenarios: ``mindtrace_kombu.worker.Worker(orchestrator, queues, handler, prefetch=...)``
# runs ``handler(job)`` per job and acks after it returns; ``run()`` consumes until ``stop()``, which
# any thread may call, the handler's included. Skipped while that module does not exist.


def _worker_module() -> ModuleType:
    """Import ``mindtrace_kombu.worker``, or skip the scenario if it does not exist yet."""
    try:
        return importlib.import_module("mindtrace_kombu.worker")
    except ModuleNotFoundError as exc:
        if exc.name != "mindtrace_kombu.worker":
            raise
        raise Skipped("mindtrace_kombu.worker does not exist yet") from exc


def worker_consume(s: Settings, backend: str) -> list[Result]:
    """Throughput of a worker draining ``s.n`` pre-published jobs, acking each after its handler;
    on Redis, where job records are on by default, also without a result store (labelled)."""
    rows = [_drain(s, backend, WORKER_CONSUME, f"prefetch {s.prefetch}")]
    if backend == "redis":
        rows.append(_drain(s, backend, WORKER_CONSUME_NO_RESULTS, f"prefetch {s.prefetch}; results=False", results=False))
    return rows


def _drain(s: Settings, backend: str, name: str, note: str, results: Literal[False] | None = None) -> Result:
    worker_module = _worker_module()
    handled = 0

    def handler(job: Job) -> None:
        nonlocal handled
        handled += 1
        if handled == s.n:
            worker.stop()

    def run() -> int:
        worker.run()
        return handled

    with declared(s, backend, "worker", results=results) as (orchestrator, queue):
        orchestrator.publish_many(queue, [bench_job() for _ in range(s.n)])
        worker = worker_module.Worker(orchestrator, queue, handler, prefetch=s.prefetch)
        return time_total(backend, name, run, note=note)


def pickup_latency(s: Settings, backend: str) -> list[Result]:
    """Latency from ``publish`` to the handler of an idle worker, one job at a time."""
    worker_module = _worker_module()
    picked = threading.Event()
    picked_at = 0.0

    def handler(job: Job) -> None:
        nonlocal picked_at
        picked_at = time.perf_counter()
        picked.set()

    jobs = [bench_job() for _ in range(LATENCY_SAMPLES)]
    samples: list[float] = []
    with declared(s, backend, "pickup") as (orchestrator, queue):
        worker = worker_module.Worker(orchestrator, queue, handler)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            start = time.perf_counter()
            for job in jobs:
                picked.clear()
                sent_at = time.perf_counter()
                orchestrator.publish(queue, job)
                if not picked.wait(PICKUP_TIMEOUT):
                    raise RuntimeError(f"no worker picked up job {job.id} in {PICKUP_TIMEOUT} s")
                samples.append(picked_at - sent_at)
            seconds = time.perf_counter() - start
        finally:
            worker.stop()
            thread.join(PICKUP_TIMEOUT)
    return [from_samples(backend, PICKUP_LATENCY, samples, seconds, len(samples), "sequential")]


def scenarios(backend: str) -> list[Scenario]:
    """The project's scenarios on ``backend``; priority backlogs only on local and redis."""
    found = [Scenario("project queue ops", partial(queue_ops, backend=backend))]
    if backend in ("local", "redis"):
        found.append(Scenario("project priority backlog", partial(priority_cost, backend=backend)))
    found.append(Scenario("project worker consume", partial(worker_consume, backend=backend)))
    found.append(Scenario("project pickup latency", partial(pickup_latency, backend=backend)))
    return found
