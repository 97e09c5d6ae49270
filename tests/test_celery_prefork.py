"""Real ``celery worker`` processes (prefork and threads pools) on Kombu's stock Redis transport
and on this package's ``mindtrace-redis``.

Every test id starts with the transport (``-k stock`` or ``-k mindtrace-redis`` picks one). Each
worker deployment lives in a namespace of its own on the shared Redis database: the broker's and
the result backend's ``global_keyprefix`` and the keys through which tasks report (see
``tests/celery_prefork_app.py``), all deleted afterwards, and queue names of its own. Shared
deployments (one worker each) serve several tests; the priority, key prefix and crash tests start
their own workers. Nothing waits by sleeping: tests wait for results or for reported executions,
with timeouts.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

pytest.importorskip("celery", reason="celery is not installed (pip install -e '.[test]')")
from celery import Celery, chain, chord, group  # noqa: E402
from celery.exceptions import TimeoutError as ResultTimeout  # noqa: E402
from celery.result import AsyncResult, ResultSet  # noqa: E402

from tests.celery_test_app_harness import CeleryWorker  # noqa: E402
from tests.celery_prefork_app import (  # noqa: E402
    RATE,
    RETRY_COUNTDOWN,
    Setup,
    create_app,
    declared_queues,
)

# As in tests/conftest.py, read here so that these tests need nothing of mindtrace_kombu's API.
REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
REQUIRE_BROKERS = os.environ.get("MINDTRACE_REQUIRE_BROKERS") == "1"
#: The lease (ours) or visibility timeout (stock, crash test only) of abandoned deliveries, s.
LEASE_TIMEOUT = 3.0
#: Ours renews leases (and releases expired ones) every third of the lease; stock sweeps for
#: abandoned deliveries every second in the crash test. Plus a second for polling and scheduling.
TAKEOVER_SLACK = LEASE_TIMEOUT / 3 + 1.0
#: Seconds a worker may take to start consuming, or to run a batch.
STARTUP_TIMEOUT = 60.0
RESULT_TIMEOUT = 60.0
TRICKLE_TASKS = 500
TRICKLE_INTERVAL = 0.003
#: countdown/ETA of delayed tasks: longer than a lease, so ours must keep the held message.
DELAY = LEASE_TIMEOUT + 1.0
REVOKE_DELAY = 1.5
RATE_LIMITED_TASKS = 15


@dataclass(frozen=True)
class Transport:
    """How a setup reaches Redis: Celery's ``broker_transport`` and its transport options."""

    broker_transport: str | None
    #: Options of every setup.
    options: dict[str, Any]
    #: Options added where an abandoned delivery must come back within LEASE_TIMEOUT.
    redelivery: dict[str, Any]


TRANSPORTS = {
    # Kombu's stock transport; a short visibility timeout would redeliver ETA tasks (held
    # unacknowledged until due), so only the crash test sets it, with a sweep every second.
    "stock": Transport(None, {}, {
        "visibility_timeout": LEASE_TIMEOUT, "unacked_restore_interval": 1, "unacked_restore_throttle": 1,
    }),
    "mindtrace-redis": Transport("mindtrace-redis", {"lease_timeout": LEASE_TIMEOUT}, {}),
}


def require_redis() -> None:
    """Skip (fail under MINDTRACE_REQUIRE_BROKERS=1) when Redis does not answer a PING."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        reason = f"redis broker at {REDIS_URL} is unreachable: {exc}"
        if REQUIRE_BROKERS:
            pytest.fail(reason)
        pytest.skip(reason)


def new_setup(transport: str, *, redelivery: bool = False, **overrides: Any) -> Setup:
    """A setup in a fresh namespace with fresh queue names."""
    chosen = TRANSPORTS[transport]
    namespace = f"t-{uuid.uuid4().hex[:12]}"
    options = {**chosen.options, **(chosen.redelivery if redelivery else {})}
    return replace(
        Setup(REDIS_URL, chosen.broker_transport, namespace, f"{namespace}-tasks", f"{namespace}-priority",
              transport_options=options),
        **overrides,
    )


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, log: Callable[[], str] = lambda: ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s\n{log()}")
        time.sleep(0.02)


def holds_off(predicate: Callable[[], Any], within: float) -> bool:
    """True if ``predicate`` stays false for ``within`` seconds (the observation window of a
    "never happens" assertion, polled)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return False
        time.sleep(0.05)
    return not predicate()


class Worker(CeleryWorker):
    """``celery -A tests.celery_prefork_app worker`` on a setup's queue, prefork ``-c 2`` by default."""

    def __init__(
        self, setup: Setup, output: Path, name: str, *, pool: str = "prefork", concurrency: int = 2,
        queues: list[str] | None = None, prefetch_multiplier: int | None = None,
    ) -> None:
        self.setup = setup
        super().__init__(
            "tests.celery_prefork_app", queues or [setup.queue], setup.env(), output,
            f"{name}-{uuid.uuid4().hex[:6]}", pool=pool, concurrency=concurrency,
            prefetch_multiplier=prefetch_multiplier,
        )

    def log(self) -> str:
        """The end of the worker's output, with its name."""
        return f"--- {self.nodename} ---\n{super().log()[-6000:]}"

    def wait_ready(self, client: redis.Redis) -> None:
        """Wait until the worker consumes (its ``worker_ready`` handler sets a key)."""
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with status {self.process.returncode}\n{self.log()}")
            return bool(client.exists(self.setup.key(f"ready:{self.nodename}")))
        wait_for(ready, STARTUP_TIMEOUT, f"worker {self.nodename} ready", self.log)


@dataclass
class Cluster:
    """A setup, the test's app and Redis client for it, and the workers started on it."""

    setup: Setup
    directory: Path
    app: Celery = field(init=False)
    client: redis.Redis = field(init=False)
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = create_app(self.setup)
        self.client = redis.Redis.from_url(REDIS_URL)

    def task(self, name: str) -> Any:
        """The app's task ``prefork.<name>``."""
        return self.app.tasks[f"prefork.{name}"]

    def start_worker(self, name: str = "worker", **options: Any) -> Worker:
        """Start a worker on this setup and wait until it consumes."""
        worker = Worker(self.setup, self.directory / f"{name}-{len(self.workers)}.log", name, **options)
        self.workers.append(worker)
        worker.wait_ready(self.client)
        return worker

    def runs(self, task_id: str | None = None) -> list[dict[str, Any]]:
        """The executions reported so far, in order (only those of ``task_id`` if given)."""
        lines = [json.loads(raw) for raw in self.client.lrange(self.setup.key("runs"), 0, -1)]
        return [line for line in lines if task_id is None or line["id"] == task_id]

    def logs(self) -> str:
        """Every worker's output, for failure messages."""
        return "\n".join(worker.log() for worker in self.workers)

    def get(self, result: AsyncResult | ResultSet, timeout: float = RESULT_TIMEOUT) -> Any:
        """The result's value; on timeout, fail with the workers' logs."""
        try:
            return result.get(timeout=timeout)
        except ResultTimeout:
            pytest.fail(f"no result within {timeout} s\n{self.logs()}")

    def close(self) -> None:
        """Stop the workers, close the app, delete every key of the namespace."""
        try:
            for worker in self.workers:
                worker.stop()
            self.app.close()
        finally:
            keys = list(self.client.scan_iter(match=f"{self.setup.namespace}*", count=1000))
            for start in range(0, len(keys), 500):
                self.client.delete(*keys[start:start + 500])
            self.client.close()


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Callable[[Setup], Cluster]]:
    """Make clusters that are closed after the test."""
    require_redis()
    with ExitStack() as stack:
        def make(setup: Setup) -> Cluster:
            cluster = Cluster(setup, tmp_path)
            stack.callback(cluster.close)
            return cluster
        yield make


# --- Shared deployments: one worker per (transport, pool, acks_late), for every test that names it.


@dataclass(frozen=True)
class Deployment:
    """A shared worker: transport, pool (concurrency 2) and acknowledgement mode."""

    transport: str
    pool: str
    acks_late: bool

    def __str__(self) -> str:
        return f"{self.transport}-{self.pool}-{'acks_late' if self.acks_late else 'acks_early'}"


PREFORK_LATE, PREFORK_EARLY = ("prefork", True), ("prefork", False)
THREADS_LATE, THREADS_EARLY = ("threads", True), ("threads", False)


def deployed_on(*kinds: tuple[str, bool]) -> pytest.MarkDecorator:
    """Run the test on a shared worker of each kind, on every transport."""
    deployments = [Deployment(name, pool, late) for name in TRANSPORTS for pool, late in kinds]
    return pytest.mark.parametrize(
        "cluster", [pytest.param(d, id=str(d)) for d in deployments], indirect=True
    )


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The running shared deployment ``request.param`` (remote control on, for revoke/inspect)."""
    deployment: Deployment = request.param
    require_redis()
    shared = Cluster(new_setup(deployment.transport, acks_late=deployment.acks_late),
                     tmp_path_factory.mktemp(str(deployment)))
    try:
        shared.start_worker("shared", pool=deployment.pool)
        yield shared
    finally:
        shared.close()


@deployed_on(PREFORK_LATE, PREFORK_EARLY, THREADS_LATE, THREADS_EARLY)
def test_trickled_tasks_all_run_none_lost(cluster: Cluster) -> None:
    # Given 500 tasks published one every few milliseconds while the worker runs and acks them
    record = cluster.task("record")
    results, due = [], time.perf_counter()
    for value in range(TRICKLE_TASKS):
        results.append(record.delay(value))
        due += TRICKLE_INTERVAL
        time.sleep(max(0.0, due - time.perf_counter()))  # pacing the producer, not synchronising

    # When every result has arrived
    values = cluster.get(ResultSet(results))

    # Expect every task to have run at least once and none lost
    assert values == list(range(TRICKLE_TASKS))
    sent = {result.id for result in results}
    ran = [line["id"] for line in cluster.runs() if line["id"] in sent]
    assert len(set(ran)) == TRICKLE_TASKS and len(ran) >= TRICKLE_TASKS


@deployed_on(PREFORK_LATE, PREFORK_EARLY, THREADS_LATE, THREADS_EARLY)
def test_chain_group_and_chord_give_their_results(cluster: Cluster) -> None:
    add, mul, total = cluster.task("add"), cluster.task("mul"), cluster.task("total")

    chained = chain(add.s(2, 2), add.s(4), mul.s(8)).apply_async()
    grouped = group(add.s(i, i) for i in range(10)).apply_async()
    chorded = chord((add.s(i, i) for i in range(10)), total.s()).apply_async()

    assert cluster.get(chained) == 64
    assert cluster.get(grouped) == [2 * i for i in range(10)]
    assert cluster.get(chorded) == 90


@deployed_on(PREFORK_LATE, THREADS_LATE)
def test_task_failing_twice_succeeds_on_its_second_retry(cluster: Cluster) -> None:
    result = cluster.task("flaky").delay(2)

    assert cluster.get(result) == 3
    attempts = cluster.runs(result.id)
    assert [line["retries"] for line in attempts] == [0, 1, 2]
    gaps = [later["at"] - earlier["at"] for earlier, later in zip(attempts, attempts[1:])]
    assert min(gaps) >= RETRY_COUNTDOWN, gaps


@deployed_on(PREFORK_LATE, PREFORK_EARLY)
def test_countdown_and_eta_tasks_run_once_after_their_time(cluster: Cluster) -> None:
    # Given tasks due in DELAY seconds (longer than a lease: the worker holds them meanwhile)
    stamp = cluster.task("stamp")
    sent = time.time()
    by_countdown = stamp.apply_async(countdown=DELAY)
    eta = datetime.now(timezone.utc) + timedelta(seconds=DELAY)
    by_eta = stamp.apply_async(eta=eta)

    # When both have run
    started = [cluster.get(by_countdown), cluster.get(by_eta)]

    # Expect each to have started after its time, once
    assert started[0] >= sent + DELAY
    assert started[1] >= eta.timestamp()
    assert [len(cluster.runs(r.id)) for r in (by_countdown, by_eta)] == [1, 1]


@deployed_on(PREFORK_LATE, THREADS_LATE)
def test_revoked_countdown_task_never_runs(cluster: Cluster) -> None:
    # Given a countdown task revoked before it is due, then a witness due after it
    stamp = cluster.task("stamp")
    doomed = stamp.apply_async(countdown=REVOKE_DELAY)
    doomed.revoke()
    witness = stamp.apply_async(countdown=REVOKE_DELAY)

    # When the witness has run, the doomed task's time has passed as well
    cluster.get(witness)

    # Expect the doomed task recorded as revoked, never executed
    wait_for(lambda: doomed.state == "REVOKED", RESULT_TIMEOUT, "REVOKED state", cluster.logs)
    assert cluster.runs(doomed.id) == []


@deployed_on(PREFORK_EARLY, THREADS_LATE)
def test_rate_limited_tasks_all_complete_at_the_rate(cluster: Cluster) -> None:
    results = [cluster.task("limited").delay(value) for value in range(RATE_LIMITED_TASKS)]

    assert cluster.get(ResultSet(results)) == list(range(RATE_LIMITED_TASKS))
    starts = sorted(line["at"] for result in results for line in cluster.runs(result.id))
    assert len(starts) == RATE_LIMITED_TASKS
    assert starts[-1] - starts[0] >= 0.8 * (RATE_LIMITED_TASKS - 1) / RATE  # the limit held them back


@deployed_on(PREFORK_LATE)
def test_inspect_answers_ping_active_and_registered(cluster: Cluster) -> None:
    # Given a task that runs until the test opens its gate
    (worker,) = cluster.workers
    gate = f"gate-{uuid.uuid4().hex}"
    running = cluster.task("block").delay(gate)
    wait_for(lambda: cluster.runs(running.id), RESULT_TIMEOUT, "blocking task started", cluster.logs)
    inspect = cluster.app.control.inspect(destination=[worker.nodename], timeout=10)
    try:
        # When the worker is asked over remote control (a fanout exchange)
        ping, active, registered = inspect.ping(), inspect.active(), inspect.registered()
    finally:
        cluster.client.set(cluster.setup.key(gate), "1")

    # Expect answers from that worker: alive, running the task, knowing the app's tasks
    assert ping == {worker.nodename: {"ok": "pong"}}
    assert [task["id"] for task in active[worker.nodename]] == [running.id]
    assert {f"prefork.{name}" for name in ("record", "block", "flaky", "ordered")} <= set(registered[worker.nodename])
    assert cluster.get(running) == running.id


@deployed_on(PREFORK_LATE)
def test_worker_never_sees_tasks_sent_under_another_key_prefix(
    cluster: Cluster, clusters: Callable[[Setup], Cluster]
) -> None:
    # Given a task sent to the running worker's queue name, but under another global_keyprefix,
    # then a marker the worker does run
    other = clusters(replace(cluster.setup, namespace=f"t-{uuid.uuid4().hex[:12]}"))
    hidden = other.task("record").delay(1)
    marker = cluster.task("record").delay(2)
    assert cluster.get(marker) == 2

    # When a worker under the other prefix starts
    other_worker = other.start_worker("other-prefix")

    # Expect the hidden task to have waited for it: run there once, never by the first worker
    assert other.get(hidden) == 1
    assert [line["host"] for line in other.runs(hidden.id)] == [other_worker.nodename]
    assert cluster.runs(hidden.id) == []


# Kombu's stock Redis transport reverses priorities (0 is highest) and folds them into 4 buckets,
# so exact highest-first order is not applicable to it: only mindtrace-redis is parametrized.
@pytest.mark.parametrize("transport", ["mindtrace-redis"])
def test_priority_queue_runs_highest_priority_first(
    transport: str, clusters: Callable[[Setup], Cluster]
) -> None:
    # Given tasks published to an x-max-priority queue while no worker consumes it
    cluster = clusters(new_setup(transport, remote_control=False))
    queue = cluster.setup.priority_queue
    with cluster.app.connection_for_write() as connection:
        declared_queues(cluster.setup)[1](connection.default_channel).declare()
    priorities = [3, 0, 9, 5, 5, 1, 7, 9, 2, 6, 0, 10]
    ordered = cluster.task("ordered")
    results = [ordered.apply_async((p, i), queue=queue, priority=p) for i, p in enumerate(priorities)]

    # When one worker (concurrency 1, prefetch 1) drains it
    cluster.start_worker("priority", concurrency=1, queues=[queue], prefetch_multiplier=1)
    cluster.get(ResultSet(results))

    # Expect highest priority first, ties in publish order, each with its message priority
    runs = cluster.runs()
    executed = [(line["priority"], line["index"]) for line in runs]
    assert executed == sorted(((p, i) for i, p in enumerate(priorities)), key=lambda item: -item[0])
    assert [line["delivered"] for line in runs] == [line["priority"] for line in runs]


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_task_of_a_killed_prefork_worker_runs_again_on_a_new_one(
    transport: str, clusters: Callable[[Setup], Cluster]
) -> None:
    # Given an acks_late task running (blocked) on a prefork worker
    cluster = clusters(new_setup(transport, redelivery=True, acks_late=True, remote_control=False))
    doomed = cluster.start_worker("doomed")
    gate = f"gate-{uuid.uuid4().hex}"
    blocked = cluster.task("block").delay(gate)
    wait_for(lambda: cluster.runs(blocked.id), RESULT_TIMEOUT, "task started", cluster.logs)

    # When that worker is SIGKILLed with its pool, and a new worker starts
    doomed.kill()
    killed_at = time.monotonic()
    heir = cluster.start_worker("heir")

    # Expect the task to run again on the new worker once the lease has run out (or the new
    # worker is up, if later), within a heartbeat ...
    due = max(killed_at + LEASE_TIMEOUT, time.monotonic()) + TAKEOVER_SLACK
    wait_for(lambda: len(cluster.runs(blocked.id)) >= 2, due - time.monotonic(), "task run again",
             cluster.logs)
    cluster.client.set(cluster.setup.key(gate), "1")
    assert cluster.get(blocked) == blocked.id
    assert [line["host"] for line in cluster.runs(blocked.id)] == [doomed.nodename, heir.nodename]
    # ... and, once done, never a third time
    no_third_run = holds_off(lambda: len(cluster.runs(blocked.id)) > 2, LEASE_TIMEOUT + TAKEOVER_SLACK)
    assert no_third_run, cluster.runs(blocked.id)
