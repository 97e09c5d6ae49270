"""Jobs published through the Orchestrator, run by a real ``celery worker`` on Redis and RabbitMQ.

One worker per broker (solo pool, prefetch 1, acks_late) serves every test of this module, each
on its own queue. The priority batch is published before the worker starts, so the worker finds
it complete and its execution order is the queue's delivery order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from mindtrace_kombu import ExecutionStatus, Job, JobSchema, JobType, Orchestrator
from mindtrace_kombu.celery import job_result, job_status
from mindtrace_kombu.config import exact_order_transport
from mindtrace_kombu.errors import ResultsNotConfigured
from tests.celery_test_app_harness import CeleryWorker, celery_worker, wait_until
from tests.celery_test_app_models import CeleryInput, CeleryOutput
from tests.conftest import AMQP_URL, REDIS_URL, make_client, unique

celery = pytest.importorskip("celery")
from celery.exceptions import NotRegistered  # noqa: E402

RESULT_TIMEOUT = 30.0
#: Priorities of the batch published before the worker starts, in publish order.
BATCH_PRIORITIES = [1, 5, 3, 5, 0, 9, 3]
TASKS = {
    "double": "mindtrace_test.double",
    "priority": "mindtrace_test.ordered",
    "flaky": "mindtrace_test.flaky",
    "unregistered": "mindtrace_test.no_such_task",  # the worker has no task of that name
}


def make_job(value: int, *, fail_times: int = 0, job_type: JobType = JobType.DEFAULT) -> Job:
    return Job(
        name=f"celery-{value}", job_type=job_type,
        payload=JobSchema(name="celery", input=CeleryInput(value=value, fail_times=fail_times)),
    )


@dataclass
class CeleryRun:
    """A producer (Celery app + Orchestrator) and a running worker, sharing queues."""

    app: Any
    orchestrator: Orchestrator
    queues: dict[str, str]
    log_path: Path
    worker: CeleryWorker | None = None
    batch: list[tuple[Job, int]] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)

    def executions(self, task: str) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        lines = [json.loads(line) for line in self.log_path.read_text().splitlines()]
        return [line for line in lines if line["task"] == task]

    def result(self, job: Job) -> Any:
        self.jobs.append(job)
        return job_result(self.app, job)

    def outcome(self, job: Job) -> Any:
        """The job's result once the task is done (an exception if it failed)."""
        result = self.result(job)
        try:
            return result.get(timeout=RESULT_TIMEOUT, propagate=False)
        except TimeoutError:
            assert self.worker is not None
            pytest.fail(f"job {job.id} not done within {RESULT_TIMEOUT} s; worker log:\n{self.worker.log()}")


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryRun]:
    backend = str(request.param)
    make_client(backend)  # skips, or fails under MINDTRACE_REQUIRE_BROKERS=1, if the broker is down
    broker = REDIS_URL if backend == "redis" else AMQP_URL
    app = celery.Celery("producer")
    app.conf.update(broker_url=broker, broker_transport=exact_order_transport(broker), result_backend=REDIS_URL)
    queues = {role: unique(f"celery-{role}") for role in TASKS}
    orchestrator = Orchestrator.from_celery(
        app, tasks={queues[role]: name for role, name in TASKS.items()},
        routes={JobType.DATA_PROCESSING: queues["double"]},
    )
    state = CeleryRun(app, orchestrator, queues, tmp_path_factory.mktemp("celery") / "executions.jsonl")
    try:
        for role, queue in queues.items():
            orchestrator.declare_queue(queue, max_priority=10 if role == "priority" else None)
        for index, priority in enumerate(BATCH_PRIORITIES):  # no worker yet: the batch waits complete
            job = make_job(index)
            orchestrator.publish(queues["priority"], job, priority=priority)
            state.batch.append((job, priority))
        env = {
            "CELERY_TEST_BROKER": broker, "CELERY_TEST_RESULT_BACKEND": REDIS_URL,
            "CELERY_TEST_QUEUES": json.dumps(queues), "CELERY_TEST_LOG": str(state.log_path),
        }
        output = state.log_path.with_name("worker.log")
        with celery_worker("tests.celery_test_app", queues.values(), env, output, unique("worker")) as worker:
            state.worker = worker
            yield state
    finally:
        for queue in queues.values():
            try:
                orchestrator.delete_queue(queue)
            except KeyError:
                pass
        for job in state.jobs + [job for job, _ in state.batch]:
            job_result(app, job).forget()
            if orchestrator.results is not None:
                orchestrator.forget(job.id)
        orchestrator.close()


def test_each_job_runs_once_with_its_typed_payload(run: CeleryRun) -> None:
    # Given jobs sent by publish, publish_many and submit (auto-routed to the same task queue)
    queue = run.queues["double"]
    jobs = [make_job(1), make_job(2), make_job(3), make_job(4, job_type=JobType.DATA_PROCESSING)]
    run.orchestrator.publish(queue, jobs[0])
    run.orchestrator.publish_many(queue, jobs[1:3])
    run.orchestrator.submit(jobs[3])

    # When the worker has run them
    outputs = [run.outcome(job) for job in jobs]

    # Expect typed results, one execution per job, and each payload arrived as its own class
    assert outputs == [
        CeleryOutput(job_id=job.id, doubled=2 * value, input_type="CeleryInput")
        for job, value in zip(jobs, [1, 2, 3, 4])
    ]
    executions = run.executions("double")
    assert sorted(line["job"] for line in executions) == sorted(job.id for job in jobs)
    assert {line["input_type"] for line in executions} == {"CeleryInput"}
    assert [job_status(run.result(job)) for job in jobs] == [ExecutionStatus.COMPLETED] * len(jobs)
    if run.app.conf.broker_url.startswith("redis"):  # the worker's acks reached Redis, not a buffer
        assert _unacked_on_redis(queue, within=10) == 0
        # and the worker recorded each job in the Orchestrator's store (the broker's
        # Redis): completed, one attempt, the typed output
        for job, output in zip(jobs, outputs):
            record = run.orchestrator.get_job(job.id)
            assert record is not None and record.status is ExecutionStatus.COMPLETED and record.attempts == 1
            assert record.payload.output == output and record.started_at and record.completed_at
    else:  # RabbitMQ has no result store by default: nothing recorded, and the calls say so
        with pytest.raises(ResultsNotConfigured):
            run.orchestrator.get_job(jobs[0].id)


def _unacked_on_redis(queue: str, within: float) -> int:
    """How many of this package's unacked records (on REDIS_URL) belong to ``queue``, waiting up
    to ``within`` seconds for the count to reach 0 (acks_late acks after the result is stored)."""
    client = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + within
    while True:
        count = sum(1 for value in client.hvals("mindtrace.unacked") if value.endswith(f'"{queue}"]'.encode()))
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def test_priority_batch_runs_highest_priority_first(run: CeleryRun) -> None:
    # Given the batch published before the worker started (see the fixture)
    # When every job of it has run
    for job, _ in run.batch:
        run.outcome(job)

    # Expect higher priorities first and, among equal ones, publish order
    expected = [job.id for job, _ in sorted(run.batch, key=lambda item: -item[1])]  # stable sort
    executions = run.executions("ordered")
    assert [line["job"] for line in executions] == expected
    assert [line["priority"] for line in executions] == sorted(BATCH_PRIORITIES, reverse=True)


def test_failing_task_is_retried_by_celery_and_its_final_state_is_visible(run: CeleryRun) -> None:
    # Given a job that fails once and one that fails more often than its two retries allow
    recovers, gives_up = make_job(10, fail_times=1), make_job(11, fail_times=5)
    run.orchestrator.publish_many(run.queues["flaky"], [recovers, gives_up])

    # When both are done
    recovered, failure = run.outcome(recovers), run.outcome(gives_up)

    # Expect the first to succeed on its retry, the second to fail after three attempts
    assert recovered == CeleryOutput(job_id=recovers.id, doubled=20, input_type="CeleryInput")
    assert isinstance(failure, RuntimeError)
    attempts = {job.id: [line["retries"] for line in run.executions("flaky") if line["job"] == job.id]
                for job in (recovers, gives_up)}
    assert attempts == {recovers.id: [0, 1], gives_up.id: [0, 1, 2]}
    assert job_status(run.result(recovers)) is ExecutionStatus.COMPLETED
    assert job_status(run.result(gives_up)) is ExecutionStatus.FAILED
    assert run.result(gives_up).state == "FAILURE"
    if run.orchestrator.results is not None:  # Redis: Celery's retries are the record's attempts
        done, failed = run.orchestrator.get_job(recovers.id), run.orchestrator.get_job(gives_up.id)
        assert done is not None and (done.status, done.attempts, done.error) == (ExecutionStatus.COMPLETED, 2, None)
        assert failed is not None and (failed.status, failed.attempts, failed.dead_lettered) == (ExecutionStatus.FAILED, 3, False)
        assert failed.error is not None and failed.error.startswith("RuntimeError: attempt 2")


def test_job_for_an_unregistered_task_is_recorded_as_failed_not_lost(run: CeleryRun) -> None:
    # Given a queue bound to a task name that the worker does not have
    job = make_job(20)
    run.orchestrator.publish(run.queues["unregistered"], job)

    # When the worker has received it
    failure = run.outcome(job)

    # Expect Celery's documented behaviour: the message is rejected (not requeued) and the task
    # is marked FAILURE with NotRegistered in the result backend, so the job reads as failed
    assert isinstance(failure, NotRegistered)
    assert job_status(run.result(job)) is ExecutionStatus.FAILED
    assert wait_until(lambda: run.orchestrator.count_queue_messages(run.queues["unregistered"]) == 0)
    assert "Received unregistered task of type 'mindtrace_test.no_such_task'" in run.worker.log()  # type: ignore[union-attr]


def test_a_prefork_worker_records_jobs_and_skips_a_cancelled_one(tmp_path: Path) -> None:
    # Given jobs on a Redis task queue, one of them cancelled before any worker runs
    make_client("redis")
    app = celery.Celery("producer")
    app.conf.update(broker_url=REDIS_URL, broker_transport=exact_order_transport(REDIS_URL), result_backend=REDIS_URL)
    queue = unique("celery-prefork-records")
    orchestrator = Orchestrator.from_celery(app, tasks={queue: TASKS["double"]})
    jobs = [make_job(value) for value in range(1, 7)]
    cancelled = jobs[2]
    try:
        orchestrator.declare_queue(queue)
        orchestrator.publish_many(queue, jobs)
        assert orchestrator.cancel(cancelled.id)
        env = {"CELERY_TEST_BROKER": REDIS_URL, "CELERY_TEST_RESULT_BACKEND": REDIS_URL,
               "CELERY_TEST_QUEUES": json.dumps({"double": queue}), "CELERY_TEST_LOG": str(tmp_path / "runs.jsonl")}
        worker = CeleryWorker("tests.celery_test_app", [queue], env, tmp_path / "worker.log", unique("prefork"),
                              pool="prefork", concurrency=2)
        try:
            # When a prefork worker (two children) has drained the queue
            done = [job for job in jobs if job is not cancelled]
            outputs = [job_result(app, job).get(timeout=RESULT_TIMEOUT) for job in done]
            wait_until(lambda: f"[{cancelled.id}] ignored" in worker.log())  # Celery's log of an Ignore
            # Then every record is complete with its typed output, and the cancelled job never ran
            for job, output in zip(done, outputs):
                record = orchestrator.wait_for(job.id, timeout=RESULT_TIMEOUT)
                assert (record.status, record.attempts, record.payload.output) == (ExecutionStatus.COMPLETED, 1, output)
            skipped = orchestrator.get_job(cancelled.id)
            assert skipped is not None and skipped.status is ExecutionStatus.CANCELLED, worker.log()
            runs = [json.loads(line)["job"] for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
            assert sorted(runs) == sorted(job.id for job in done)
        finally:
            worker.stop()
    finally:
        orchestrator.delete_queue(queue)
        for job in jobs:
            job_result(app, job).forget()
            orchestrator.forget(job.id)
        orchestrator.close()
