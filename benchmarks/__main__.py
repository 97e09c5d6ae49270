"""Command line: ``python -m benchmarks [--quick] [--backends local,redis,rabbitmq] [--n N] [--json PATH]``.

Runs every baseline, end-to-end (each job system's own workers) and project scenario on the chosen backends in one
process, then prints the rate table and the ratio table. Progress goes to stderr. The exit status is 1 when a scenario
failed; skipped scenarios (an optional package or a project module not there yet) do not count.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from contextlib import nullcontext

from benchmarks import baselines, celery_e2e, e2e
from benchmarks.cluster import on_cluster
from benchmarks.harness import Ratio, Result, Scenario, Settings, Skipped, print_report, to_json
from benchmarks.names import (
    AMQP_GET,
    ASYNC_PUBLISH,
    AMQP_PUBLISH,
    AMQP_PUBLISH_CONFIRMED,
    CELERY_E2E_AMQP,
    CELERY_E2E_OURS,
    CELERY_E2E_STOCK,
    CELERY_SEND_TASK,
    CELERY_THREADS_E2E,
    CPU_PROCESSES,
    CPU_THREADS,
    DRAMATIQ_E2E,
    GET_JOB_1K,
    GET_JOB_100K,
    KOMBU_CONSUME,
    KOMBU_GET,
    KOMBU_PUBLISH,
    LPUSH,
    LPUSH_PIPELINED,
    MINDTRACE_E2E,
    MINDTRACE_E2E_UNCONFIRMED,
    PRIORITY_BIG,
    PRIORITY_SMALL,
    PUBLISH,
    PUBLISH_MANY,
    PUBLISH_ONE_THREAD,
    PUBLISH_THREADS,
    PUBLISH_UNCONFIRMED,
    PUBLISH_TRACKED,
    PUBLISH_UNTRACKED,
    RECEIVE,
    RPOP,
    RQ_E2E,
    RQ_ENQUEUE,
    SYNC_PUBLISH_SEQUENTIAL,
    WORKER_CONSUME,
    WORKER_CONSUME_NO_RESULTS,
)

BACKENDS = ("local", "redis", "rabbitmq", "rediscluster")


def _on(backend: str) -> Callable[[str], str]:
    """Return a function that turns a result name into its key on ``backend``."""
    return lambda name: f"{backend}/{name}"


def ratios(backends: Sequence[str]) -> list[Ratio]:
    """The ratio rows for the chosen backends.

    The priority rows divide the small-backlog rate by the large-backlog one: that is the cost of a
    publish+receive with the large backlog relative to the small one.
    """
    local, redis, rabbit, cluster = _on("local"), _on("redis"), _on("rabbitmq"), _on("rediscluster")
    rows = {
        "local": [
            Ratio("publish / stock Kombu memory", local(PUBLISH), local(KOMBU_PUBLISH)),
            Ratio("receive / stock Kombu memory get+ack", local(RECEIVE), local(KOMBU_GET)),
            Ratio("priority cost large/small backlog", local(PRIORITY_SMALL), local(PRIORITY_BIG)),
            Ratio("cpu-bound jobs: 4 processes / 4 threads", local(CPU_PROCESSES), local(CPU_THREADS)),
            Ratio("SQL get_job latency 100k / 1k records (<= 1.5)", local(GET_JOB_1K), local(GET_JOB_100K)),
        ],
        "redis": [
            Ratio("publish / raw LPUSH", redis(PUBLISH), redis(LPUSH)),
            Ratio("async publish, 100 tasks / sync sequential (>= 3)", redis(ASYNC_PUBLISH), redis(SYNC_PUBLISH_SEQUENTIAL)),
            Ratio("publish results tracked / not (>= 0.9)", redis(PUBLISH_TRACKED), redis(PUBLISH_UNTRACKED)),
            Ratio("publish / Celery send_task", redis(PUBLISH), redis(CELERY_SEND_TASK)),
            Ratio("publish / RQ enqueue", redis(PUBLISH), redis(RQ_ENQUEUE)),
            Ratio("publish / stock Kombu publish", redis(PUBLISH), redis(KOMBU_PUBLISH)),
            Ratio("publish_many / pipelined LPUSH", redis(PUBLISH_MANY), redis(LPUSH_PIPELINED)),
            Ratio("receive / raw RPOP", redis(RECEIVE), redis(RPOP)),
            Ratio("receive / stock Kombu get+ack", redis(RECEIVE), redis(KOMBU_GET)),
            Ratio("priority cost large/small backlog", redis(PRIORITY_SMALL), redis(PRIORITY_BIG)),
            Ratio(
                "celery prefork e2e mindtrace-redis / stock",
                redis(CELERY_E2E_OURS),
                redis(CELERY_E2E_STOCK),
            ),
            Ratio("e2e worker / Celery prefork (>= 3)", redis(MINDTRACE_E2E), redis(CELERY_E2E_STOCK)),
            Ratio("e2e worker / Celery threads", redis(MINDTRACE_E2E), redis(CELERY_THREADS_E2E)),
            Ratio("e2e worker / RQ (>= 5)", redis(MINDTRACE_E2E), redis(RQ_E2E)),
            Ratio("e2e worker / Dramatiq (>= 1.0)", redis(MINDTRACE_E2E), redis(DRAMATIQ_E2E)),
        ],
        "rabbitmq": [
            Ratio("publish (confirms) / raw unconfirmed", rabbit(PUBLISH), rabbit(AMQP_PUBLISH)),
            Ratio(
                "publish (confirms) / raw confirmed",
                rabbit(PUBLISH),
                rabbit(AMQP_PUBLISH_CONFIRMED),
            ),
            Ratio("publish / Celery send_task", rabbit(PUBLISH), rabbit(CELERY_SEND_TASK)),
            Ratio("publish / stock Kombu publish", rabbit(PUBLISH), rabbit(KOMBU_PUBLISH)),
            Ratio("receive / raw basic_get", rabbit(RECEIVE), rabbit(AMQP_GET)),
            Ratio("publish unconfirmed / Celery send_task (>= 1.5)", rabbit(PUBLISH_UNCONFIRMED), rabbit(CELERY_SEND_TASK)),
            Ratio("publish confirmed: 8 threads / 1 thread (>= 4)", rabbit(PUBLISH_THREADS), rabbit(PUBLISH_ONE_THREAD)),
            Ratio("publish_many confirmed / raw unconfirmed (>= 0.5)", rabbit(PUBLISH_MANY), rabbit(AMQP_PUBLISH)),
            Ratio(
                "e2e worker / Celery prefork (>= 2)", rabbit(MINDTRACE_E2E), rabbit(CELERY_E2E_AMQP)
            ),
            Ratio("e2e worker / Celery threads", rabbit(MINDTRACE_E2E), rabbit(CELERY_THREADS_E2E)),
            Ratio("e2e worker / Dramatiq (>= 1.0)", rabbit(MINDTRACE_E2E), rabbit(DRAMATIQ_E2E)),
            Ratio(
                "e2e worker, unconfirmed publish / Celery prefork", rabbit(MINDTRACE_E2E_UNCONFIRMED),
                rabbit(CELERY_E2E_AMQP),
            ),
            Ratio("e2e worker, unconfirmed publish / Dramatiq", rabbit(MINDTRACE_E2E_UNCONFIRMED), rabbit(DRAMATIQ_E2E)),
        ],
        "rediscluster": [
            # both record results by default (on the cluster, in calls of their own: a batch's
            # records span slots)
            Ratio("publish: 6-node cluster / single Redis", cluster(PUBLISH), redis(PUBLISH)),
            Ratio("publish_many: 6-node cluster / single Redis", cluster(PUBLISH_MANY), redis(PUBLISH_MANY)),
            Ratio("worker: 6-node cluster / single Redis", cluster(WORKER_CONSUME), redis(WORKER_CONSUME)),
        ],
    }
    worker = [
        Ratio("worker / stock Kombu consume+ack", on(WORKER_CONSUME), on(KOMBU_CONSUME))
        for on in map(_on, (backend for backend in backends if backend != "rediscluster"))
    ]
    if "redis" in backends:
        worker.append(Ratio("worker, no result store / stock Kombu consume+ack", redis(WORKER_CONSUME_NO_RESULTS),
                            redis(KOMBU_CONSUME)))
    return [row for backend in backends for row in rows[backend]] + worker


def project_scenarios() -> tuple[Callable[[str], list[Scenario]], str | None]:
    """Return the project's scenarios per backend, and why they are unavailable, if they are."""
    try:
        from benchmarks import async_publish, cpu_pool, project, publish_modes, results
    except ImportError as exc:
        return (lambda backend: []), f"project scenarios unavailable: {exc}"
    modules = (project, publish_modes, async_publish, cpu_pool, results)
    return (lambda backend: [scenario for module in modules for scenario in module.scenarios(backend)]), None


def run(
    settings: Settings, backends: Sequence[str], project: Callable[[str], list[Scenario]]
) -> tuple[list[Result], list[str], bool]:
    """Run every scenario; return the results, notes on skips and failures, and whether any failed."""
    results: list[Result] = []
    notes: list[str] = []
    failed = False
    for backend in backends:
        scenarios = (
            baselines.scenarios(backend)
            + e2e.scenarios(backend)
            + celery_e2e.scenarios(backend)
            + project(backend)
        )
        try:
            with on_cluster(settings) if backend == "rediscluster" else nullcontext(settings) as where:
                failed = _run_scenarios(where, backend, scenarios, results, notes) or failed
        except Skipped as exc:
            notes.append(f"{backend}: skipped: {exc}")
    return results, notes, failed


def _run_scenarios(
    settings: Settings, backend: str, scenarios: Sequence[Scenario], results: list[Result], notes: list[str]
) -> bool:
    """Run ``scenarios``, adding to ``results`` and ``notes``; return whether any failed."""
    failed = False
    for scenario in scenarios:
        print(f"[{backend}] {scenario.label} ...", end="", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            results += scenario.run(settings)
            print(f" {time.perf_counter() - started:.1f} s", file=sys.stderr)
        except Skipped as exc:
            print(" skipped", file=sys.stderr)
            notes.append(f"{backend}: {scenario.label} skipped: {exc}")
        # Any failure is reported and the run goes on: one broken scenario hides nothing else.
        except Exception as exc:  # noqa: BLE001
            print(" FAILED", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            notes.append(f"{backend}: {scenario.label} FAILED: {type(exc).__name__}: {exc}")
            failed = True
    return failed


def _backends(value: str) -> list[str]:
    chosen = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {','.join(BACKENDS)}; got {value!r}")
    return chosen


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {number}")
    return number


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="mindtrace-kombu throughput and latency, side by side.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small N for CI; asserts nothing about speed"
    )
    parser.add_argument(
        "--backends", type=_backends, default=list(BACKENDS), help="comma-separated, default: all"
    )
    parser.add_argument(
        "--n", type=_positive, help="operations per scenario (default 10,000; 500 with --quick)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    return parser.parse_args(argv)


def settings_for(args: argparse.Namespace) -> Settings:
    """Full runs time 10,000 operations over a 1,000,000-job backlog; quick ones 500 over 20,000."""
    settings = Settings(n=500, big_backlog=20_000) if args.quick else Settings(n=10_000)
    return settings if args.n is None else dataclasses.replace(settings, n=args.n)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and print the report; return the exit status."""
    args = parse_args(argv)
    settings = settings_for(args)
    project, unavailable = project_scenarios()
    started = time.perf_counter()
    results, notes, failed = run(settings, args.backends, project)
    elapsed = time.perf_counter() - started
    if unavailable:
        notes.insert(0, unavailable)
    table = ratios(args.backends)
    print(
        f"n={settings.n:,} per scenario, batch {settings.batch}, prefetch {settings.prefetch}, "
        f"priority backlogs {settings.small_backlog:,}/{settings.big_backlog:,}, "
        f"run {settings.run_id}, {elapsed:.1f} s\n"
    )
    print_report(results, table, sys.stdout)
    for note in notes:
        print(f"note: {note}")
    if args.json is not None:
        shown = {k: v for k, v in dataclasses.asdict(settings).items() if not k.endswith("_url")}
        extra = {"settings": shown, "backends": args.backends, "seconds": elapsed, "notes": notes}
        args.json.write_text(to_json(results, table, extra))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
