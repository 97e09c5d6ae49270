"""Job-result rows: what recording costs a Redis publish (records written by the publish script
itself), and whether a SQL look-up stays flat as the table grows (1k vs 100k records, SQLite)."""

from __future__ import annotations

import random
import tempfile
from functools import partial
from pathlib import Path

from benchmarks.harness import Result, Scenario, Settings, Skipped, time_each
from benchmarks.names import GET_JOB_1K, GET_JOB_100K, PUBLISH_TRACKED, PUBLISH_UNTRACKED
from benchmarks.project import bench_job
from mindtrace_kombu import Orchestrator
from mindtrace_kombu.results.base import job_record

LOOKUPS = 500
_SAVE_BATCH = 5_000


def publish_tracked(s: Settings) -> list[Result]:
    """``publish`` with and without job records, alternating in rounds on two queues, so both
    see the same server state."""
    queue = s.queue_name("results-publish")
    results: dict[str, list[Result]] = {PUBLISH_TRACKED: [], PUBLISH_UNTRACKED: []}
    with Orchestrator.from_url(s.redis_url) as tracked, Orchestrator.from_url(s.redis_url, results=False) as plain:
        for orchestrator in (tracked, plain):
            orchestrator.declare_queue(f"{queue}-{id(orchestrator)}")
        try:
            rounds = 4
            for _ in range(rounds):
                for name, orchestrator in ((PUBLISH_TRACKED, tracked), (PUBLISH_UNTRACKED, plain)):
                    target = f"{queue}-{id(orchestrator)}"
                    jobs = iter([bench_job() for _ in range(s.n // rounds + 1)])
                    results[name].append(time_each(
                        "redis", name, lambda: orchestrator.publish(target, next(jobs)), s.n // rounds, warmup=1))
        finally:
            for orchestrator in (tracked, plain):
                orchestrator.delete_queue(f"{queue}-{id(orchestrator)}")
            for job in tracked.list_jobs(f"{queue}-{id(tracked)}", limit=s.n + 10):
                tracked.forget(job.id)
    return [_merge(name, parts) for name, parts in results.items()]


def _merge(name: str, parts: list[Result]) -> Result:
    return Result("redis", name, sum(part.ops for part in parts), sum(part.seconds for part in parts), note="alternating rounds")


def sql_lookup(s: Settings) -> list[Result]:
    """``get_job`` by id on a SQLite store holding 1k records, then 100k."""
    try:
        from mindtrace_kombu.results.sql import SqlResultStore
    except ImportError as exc:
        raise Skipped(f"SQLAlchemy is not installed: {exc}") from exc
    found = []
    with tempfile.TemporaryDirectory() as directory:
        store = SqlResultStore(f"sqlite:///{Path(directory) / 'jobs.db'}")
        ids: list[str] = []
        for name, size in ((GET_JOB_1K, 1_000), (GET_JOB_100K, 100_000)):
            while len(ids) < size:
                jobs = [bench_job("r") for _ in range(min(_SAVE_BATCH, size - len(ids)))]
                store.save("bench", [job_record(job) for job in jobs])
                ids += [job.id for job in jobs]
            picks = iter(random.choices(ids, k=LOOKUPS + 10))
            found.append(time_each("local", name, lambda: store.get(next(picks)), LOOKUPS, warmup=10))
        store.close()
    return found


def scenarios(backend: str) -> list[Scenario]:
    """Redis publish with and without records; SQL look-ups (reported under ``local``)."""
    if backend == "redis":
        return [Scenario("results: publish tracked vs not", publish_tracked)]
    if backend == "local":
        return [Scenario("results: SQL get_job 1k vs 100k", sql_lookup)]
    return []
