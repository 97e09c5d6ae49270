"""End to end against peer job systems' workers: this package's, Celery's, RQ's and Dramatiq's,
each system's own worker processes on the same broker, running the same no-op job.

Every system gets 2 OS processes that each run 1 job at a time (how each gets there is in its
row's note) and its defaults otherwise. One generic runner per system and backend: declare what
the system needs, start its workers and wait until they consume (a signal the worker gives, or
its registration), publish ``n`` jobs (at most :data:`MAX_JOBS`) one call each, each carrying its
publish time, then block until the job that completes the count says so on a Redis list (no
polling). The rate counts from the first publish to the last completion; p50/p99 are the pickup
latencies under that load (:func:`benchmarks.e2e_jobs.record`). Each run has a queue name and key
prefix of its own and deletes every key and RabbitMQ queue it created afterwards, also when it
fails.
"""

from __future__ import annotations

import importlib
import itertools
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import kombu
import redis

from benchmarks import e2e_jobs
from benchmarks.harness import Result, Scenario, Settings, Skipped, from_samples
from benchmarks.names import (
    CELERY_E2E_AMQP,
    CELERY_E2E_STOCK,
    CELERY_THREADS_E2E,
    DRAMATIQ_E2E,
    MINDTRACE_E2E,
    MINDTRACE_E2E_TUNED,
    MINDTRACE_E2E_UNCONFIRMED,
    RQ_E2E,
)
from benchmarks.processes import Workers, delete_matching, module_command, started, wait_for_item

#: Jobs per system: ``Settings.n``, capped.
MAX_JOBS = 5_000
#: RQ forks a process per job: fewer jobs keep its run short.
RQ_MAX_JOBS = 2_000
#: Completions per second below which a run is declared stuck.
MIN_RATE = 20.0
#: Worker OS processes per system.
PROCESSES = 2


@dataclass(frozen=True)
class Run:
    """One system's run on one backend: its broker, its unique names, its size."""

    settings: Settings
    backend: str
    queue: str
    total: int
    client: redis.Redis

    @property
    def prefix(self) -> str:
        """Prefix of every Redis key of the run (each system keeps its own keys under it)."""
        return f"{self.queue}:"

    @property
    def broker_url(self) -> str:
        """The run's broker: the Redis or the RabbitMQ URL of the settings."""
        return self.settings.redis_url if self.backend == "redis" else self.settings.amqp_url


class Producer(NamedTuple):
    """A system's producer side: enqueue one job published at a time, and whether all its
    worker processes consume."""

    send: Callable[[float], object]
    ready: Callable[[], bool]


@dataclass(frozen=True)
class System:
    """How one job system takes part: its workers, its producer, and what it leaves on RabbitMQ.

    ``amqp_queues`` and ``amqp_exchanges`` are templates of the names it declares there
    (``{q}``: the run's queue); on Redis every key holds the run's queue name.
    """

    name: str
    note: str
    commands: Callable[[Run], list[list[str]]]
    producer: Callable[[Run], AbstractContextManager[Producer]]
    env: dict[str, str] = field(default_factory=dict)
    amqp_queues: tuple[str, ...] = ("{q}",)
    amqp_exchanges: tuple[str, ...] = ()
    max_jobs: int = MAX_JOBS


def _require(module: str, package: str) -> ModuleType:
    """Import ``module``, or skip the scenario when its package is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Skipped(f"{package} is not installed (pip install {package}): {exc}") from exc


def _signalled(run: Run, count: int) -> bool:
    """Whether ``count`` worker processes announced they consume (``e2e_jobs.announce_ready``)."""
    return int(run.client.get(e2e_jobs.ready_key(run.prefix)) or 0) >= count


# --- this package: `mindtrace-jobs worker` ------------------------------------------------------


def _mindtrace_url(run: Run) -> str:
    """The broker URL, on Redis with the run's prefix as ``global_keyprefix``."""
    if run.backend != "redis":
        return run.broker_url
    return f"{run.broker_url}?global_keyprefix={run.prefix}"


def _mindtrace_commands(run: Run, options: tuple[str, ...] = ()) -> list[list[str]]:
    command = module_command(
        "mindtrace_kombu.cli", "--broker", _mindtrace_url(run), "worker",
        "benchmarks.e2e_mindtrace:handle", "-Q", run.queue, *options,
    )
    return [command] * PROCESSES


@contextmanager
def _mindtrace_producer(run: Run, confirm_publish: bool = True) -> Iterator[Producer]:
    """Declare the queue (workers refuse a missing one), publish with ``Orchestrator.publish``."""
    jobs = _require("benchmarks.e2e_mindtrace", "mindtrace-kombu")
    from mindtrace_kombu import Orchestrator

    with Orchestrator.from_url(_mindtrace_url(run), confirm_publish=confirm_publish) as orchestrator:
        orchestrator.declare_queue(run.queue)
        try:
            yield Producer(
                lambda published: orchestrator.publish(run.queue, jobs.job(published, run.total)),
                lambda: orchestrator.consumer_counts([run.queue]).get(run.queue, 0) >= PROCESSES,
            )
        finally:
            orchestrator.delete_queue(run.queue)


MINDTRACE = System(
    MINDTRACE_E2E,
    "2 procs x 1 job: 2 x `mindtrace-jobs worker` (threads pool, -c 1)",
    _mindtrace_commands,
    _mindtrace_producer,
    amqp_queues=("{q}", "{q}.dlq"),
)
MINDTRACE_TUNED = replace(
    MINDTRACE,
    name=MINDTRACE_E2E_TUNED,
    note="tuned: as above with --prefetch 10",
    commands=partial(_mindtrace_commands, options=("--prefetch", "10")),
)
MINDTRACE_UNCONFIRMED = replace(
    MINDTRACE,
    name=MINDTRACE_E2E_UNCONFIRMED,
    note="as the default row, publishing with confirm_publish=False (Celery's send_task guarantee)",
    producer=partial(_mindtrace_producer, confirm_publish=False),
)


# --- Celery: `celery worker` --------------------------------------------------------------------


def _celery_commands(run: Run, pool: str, processes: int, concurrency: int) -> list[list[str]]:
    """``processes`` workers of ``pool`` with ``concurrency`` each. ``--without-gossip``,
    ``--without-mingle`` and ``--without-heartbeat`` only spare the start-up sync with other
    workers and the event chatter."""
    return [
        module_command(
            "celery", "-A", "benchmarks.celery_e2e_app", "worker", "--pool", pool,
            "--concurrency", str(concurrency), "--queues", run.queue,
            "--hostname", f"{run.queue}-{index}@{socket.gethostname()}",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING",
        )
        for index in range(processes)
    ]


@contextmanager
def _celery_producer(run: Run, transport: str | None, processes: int) -> Iterator[Producer]:
    """``send_task`` on one producer; each worker's ``worker_ready`` announces it."""
    app_module = _require("benchmarks.celery_e2e_app", "celery")
    app = app_module.create_app(run.broker_url, transport, run.prefix)
    try:
        with app.producer_or_acquire() as producer:
            yield Producer(
                lambda published: app.send_task(
                    app_module.TASK, args=(published, run.total), queue=run.queue, producer=producer
                ),
                partial(_signalled, run, processes),
            )
    finally:
        app.close()


def celery_system(
    name: str, pool: str, processes: int, concurrency: int, note: str, transport: str | None = None
) -> System:
    """Celery's worker: ``processes`` x ``celery worker --pool pool --concurrency concurrency``."""
    return System(
        name,
        note,
        partial(_celery_commands, pool=pool, processes=processes, concurrency=concurrency),
        partial(_celery_producer, transport=transport, processes=processes),
        env={e2e_jobs.TRANSPORT_ENV: transport or ""},
        amqp_exchanges=("{q}",),
    )


def celery_prefork(name: str, transport: str | None = None) -> System:
    """Celery's default pool: ``celery worker --pool prefork --concurrency 2`` on ``transport``."""
    note = "2 procs x 1 job: `celery worker -P prefork -c 2` (+ its consuming parent)"
    return celery_system(name, "prefork", 1, 2, note, transport)


CELERY_THREADS = celery_system(
    CELERY_THREADS_E2E, "threads", PROCESSES, 1,
    "2 procs x 1 job: 2 x `celery worker -P threads -c 1`",
)


# --- RQ: `rq worker` ----------------------------------------------------------------------------


def _rq_commands(run: Run) -> list[list[str]]:
    return [
        module_command(
            "rq.cli", "worker", "--url", run.settings.redis_url,
            "--name", f"{run.queue}-{index}", run.queue,
        )
        for index in range(PROCESSES)
    ]


@contextmanager
def _rq_producer(run: Run) -> Iterator[Producer]:
    """``Queue.enqueue`` of :func:`e2e_jobs.record`, with job ids holding the queue name (RQ has
    no key prefix); the workers are ready once registered."""
    rq = _require("rq", "rq")
    queue = rq.Queue(run.queue, connection=run.client)
    ids = itertools.count()
    try:
        yield Producer(
            lambda published: queue.enqueue(
                e2e_jobs.record, published, run.total, job_id=f"{run.queue}-{next(ids)}"
            ),
            lambda: len(rq.Worker.all(queue=queue)) >= PROCESSES,
        )
    finally:
        queue.delete(delete_jobs=True)  # also takes it off the rq:queues set


RQ = System(
    RQ_E2E,
    f"2 procs x 1 job: 2 x `rq worker` (a work horse forked per job); n <= {RQ_MAX_JOBS:,}",
    _rq_commands,
    _rq_producer,
    max_jobs=RQ_MAX_JOBS,
)


# --- Dramatiq: `dramatiq --processes 2 --threads 1` ---------------------------------------------


def _dramatiq_commands(run: Run) -> list[list[str]]:
    return [module_command(
        "dramatiq", "benchmarks.e2e_dramatiq", "--processes", str(PROCESSES), "--threads", "1",
        "--queues", run.queue,
    )]


@contextmanager
def _dramatiq_producer(run: Run) -> Iterator[Producer]:
    """``actor.send`` on a broker like the workers'; each worker process announces its boot."""
    actors = _require("benchmarks.e2e_dramatiq", "dramatiq[redis,rabbitmq]")
    broker = actors.create_broker(run.broker_url, run.prefix)
    actor = actors.declare_actor(broker, run.queue)
    try:
        yield Producer(
            lambda published: actor.send(published, run.total), partial(_signalled, run, PROCESSES)
        )
    finally:
        broker.close()


DRAMATIQ = System(
    DRAMATIQ_E2E,
    "2 procs x 1 job: `dramatiq --processes 2 --threads 1` (+ its parent)",
    _dramatiq_commands,
    _dramatiq_producer,
    amqp_queues=("{q}", "{q}.DQ", "{q}.XQ"),
)


# --- the runner ---------------------------------------------------------------------------------


def _publish_and_wait(run: Run, producer: Producer, workers: Workers) -> float:
    """Publish every job, block until the last completes; return the seconds in between."""
    start = time.perf_counter()
    for _ in range(run.total):
        producer.send(time.time())
    timeout = max(30.0, run.total / MIN_RATE)
    if not wait_for_item(run.client, e2e_jobs.finished_key(run.prefix), timeout):
        done = int(run.client.get(e2e_jobs.done_key(run.prefix)) or 0)
        raise RuntimeError(f"{done} of {run.total} jobs done in {timeout:.0f} s:\n{workers.tail()}")
    return time.perf_counter() - start


def _delete_amqp(run: Run, system: System) -> None:
    """Delete the RabbitMQ queues and exchanges the system declared (absent ones are no error)."""
    with kombu.Connection(run.settings.amqp_url) as connection:
        channel = connection.default_channel
        for queue in system.amqp_queues:
            channel.queue_delete(queue.format(q=run.queue))
        for exchange in system.amqp_exchanges:
            channel.exchange_delete(exchange.format(q=run.queue))


def end_to_end(s: Settings, backend: str, system: System) -> list[Result]:
    """Run ``min(s.n, system.max_jobs)`` jobs through ``system``'s workers on ``backend``."""
    slug = re.sub(r"[^a-z0-9]+", "-", system.name.lower()).strip("-")
    queue = s.queue_name(f"{slug}-{backend}")
    client = redis.Redis.from_url(s.redis_url)
    run = Run(s, backend, queue, min(s.n, system.max_jobs), client)
    env = {
        e2e_jobs.REDIS_ENV: s.redis_url, e2e_jobs.PREFIX_ENV: run.prefix,
        e2e_jobs.BROKER_ENV: run.broker_url, e2e_jobs.QUEUE_ENV: queue, **system.env,
    }
    try:
        with (
            tempfile.TemporaryDirectory() as directory,
            system.producer(run) as producer,
            started(system.commands(run), env, Path(directory)) as workers,
        ):
            workers.wait_until(producer.ready, f"{system.name}: workers not consuming")
            seconds = _publish_and_wait(run, producer, workers)
        latencies = [float(x) for x in client.lrange(e2e_jobs.latencies_key(run.prefix), 0, -1)]
    finally:
        delete_matching(client, f"*{queue}*")
        if backend == "rabbitmq":
            _delete_amqp(run, system)
        client.close()
    return [from_samples(backend, system.name, latencies, seconds, run.total, system.note)]


def systems(backend: str) -> list[System]:
    """The systems compared on ``backend``: RQ runs on Redis only."""
    ours = [MINDTRACE, MINDTRACE_TUNED]
    if backend == "redis":
        return [*ours, celery_prefork(CELERY_E2E_STOCK), CELERY_THREADS, RQ, DRAMATIQ]
    if backend == "rabbitmq":
        return [*ours, MINDTRACE_UNCONFIRMED, celery_prefork(CELERY_E2E_AMQP), CELERY_THREADS, DRAMATIQ]
    return []


def scenarios(backend: str) -> list[Scenario]:
    """One scenario per system (a failure of one keeps the others' rows)."""
    return [
        Scenario(system.name, partial(end_to_end, backend=backend, system=system))
        for system in systems(backend)
    ]
