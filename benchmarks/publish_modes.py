"""RabbitMQ publishing modes: unconfirmed publishes (Celery's guarantee) and confirmed publishing
from one thread and from several threads sharing one orchestrator.

The unconfirmed row ends with one confirmed publish, so it counts only jobs the broker holds.
"""

from __future__ import annotations

import threading
from functools import partial

from benchmarks.harness import Result, Scenario, Settings, time_each, time_total
from benchmarks.names import PUBLISH_ONE_THREAD, PUBLISH_THREADS, PUBLISH_UNCONFIRMED
from benchmarks.project import bench_job, declared, expect_count
from mindtrace_kombu import Job, Orchestrator

THREADS = 8


def unconfirmed(s: Settings, backend: str) -> list[Result]:
    """``publish(confirm=False)`` one job at a time; the last publish is confirmed."""
    jobs = iter([bench_job() for _ in range(s.n + 2)])
    with declared(s, backend, "unconfirmed") as (orchestrator, queue):
        result = time_each(
            backend, PUBLISH_UNCONFIRMED, lambda: orchestrator.publish(queue, next(jobs), confirm=False), s.n,
            warmup=1, finish=lambda: orchestrator.publish(queue, next(jobs)), note="persistent, not awaited",
        )
        expect_count(orchestrator, queue, s.n + 2)
    return [result]


def _publish_from(orchestrator: Orchestrator, queue: str, threads: int, n: int) -> int:
    """``n`` confirmed publishes spread over ``threads`` threads; returns how many were made."""
    each = n // threads
    batches = [[bench_job() for _ in range(each)] for _ in range(threads)]

    def publish(jobs: list[Job]) -> None:
        for job in jobs:
            orchestrator.publish(queue, job)

    workers = [threading.Thread(target=publish, args=(jobs,)) for jobs in batches]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return each * threads


def threaded(s: Settings, backend: str) -> list[Result]:
    """Confirmed publishes from 1 thread, then from :data:`THREADS` threads, on one orchestrator."""
    results = []
    with declared(s, backend, "threads") as (orchestrator, queue):
        for name, threads in ((PUBLISH_ONE_THREAD, 1), (PUBLISH_THREADS, THREADS)):
            _publish_from(orchestrator, queue, threads, threads)  # warm: one session per thread
            results.append(time_total(
                backend, name, partial(_publish_from, orchestrator, queue, threads, s.n), note=f"{threads} threads"
            ))
    return results


def scenarios(backend: str) -> list[Scenario]:
    """On RabbitMQ only: elsewhere a publish is complete when it returns, with or without confirms."""
    if backend != "rabbitmq":
        return []
    return [
        Scenario("project publish unconfirmed", partial(unconfirmed, backend=backend)),
        Scenario("project publish from threads", partial(threaded, backend=backend)),
    ]
