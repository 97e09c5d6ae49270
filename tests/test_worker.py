"""Worker semantics on every backend, in-process: acknowledgement, retries, dead letters,
poison messages, claim, priority order, burst mode."""

from __future__ import annotations

import json

import pytest

from mindtrace_kombu import ExecutionStatus, Job, JobDecodeError, JobOutput, Orchestrator
from mindtrace_kombu.orchestrator import OutgoingMessage
from mindtrace_kombu.queues import dead_letter_queue_name
from mindtrace_kombu.serialization import CONTENT_TYPE, dumps
from mindtrace_kombu.worker import JobEvent, Worker

from .conftest import make_job, unique

pytestmark = pytest.mark.timeout(60)


class Doubled(JobOutput):
    doubled: int


def test_handler_result_is_acknowledged_and_recorded(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(5)])
    events: list[JobEvent] = []
    stats = orchestrator.consume(
        queue_name, lambda job: Doubled(doubled=job.payload.input.value * 2), until_empty=True, on_event=events.append
    )
    assert (stats.processed, stats.completed) == (5, 5)
    assert [event.job.payload.output for event in events] == [Doubled(doubled=n * 2) for n in range(5)]  # type: ignore[union-attr]
    job = events[0].job
    assert job is not None and job.status is ExecutionStatus.COMPLETED and job.attempts == 1
    assert job.started_at is not None and job.completed_at is not None
    assert orchestrator.count_queue_messages(queue_name) == 0


def test_flaky_handler_completes_on_third_attempt(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(1))
    calls: list[int] = []

    def flaky(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) <= 2:
            raise RuntimeError("not yet")

    events: list[JobEvent] = []
    orchestrator.consume(queue_name, flaky, until_empty=True, max_retries=3, retry_backoff=0.01, on_event=events.append)
    assert [event.outcome for event in events] == ["retried", "retried", "completed"]
    assert events[-1].attempts == 3 and events[-1].job.status is ExecutionStatus.COMPLETED  # type: ignore[union-attr]
    assert orchestrator.count_queue_messages(queue_name) == 0


def test_failing_handler_is_dead_lettered_with_its_error(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(7))

    def broken(job: Job) -> None:
        raise ValueError("bad input 7")

    stats = orchestrator.consume(queue_name, broken, until_empty=True, max_retries=2, retry_backoff=0.01)
    assert (stats.retried, stats.dead_lettered) == (2, 1)
    [letter] = orchestrator.dead_letters(queue_name)
    assert letter.job is not None and letter.job.payload.input.value == 7  # type: ignore[attr-defined]
    assert letter.job.status is ExecutionStatus.FAILED and letter.attempts == 3
    assert "ValueError: bad input 7" in letter.reason and letter.error == "ValueError: bad input 7"
    assert "bad input 7" in letter.headers["x-mindtrace-traceback"]
    # listing leaves it there; requeueing sends it back with a fresh count
    assert orchestrator.count_queue_messages(dead_letter_queue_name(queue_name)) == 1
    assert orchestrator.requeue_dead_letters(queue_name) == 1
    assert orchestrator.count_queue_messages(dead_letter_queue_name(queue_name)) == 0
    requeued = orchestrator.receive_message(queue_name)
    assert requeued is not None and requeued.attempts == 0 and requeued.error is None
    orchestrator.delete_queue(dead_letter_queue_name(queue_name))


def test_job_max_retries_overrides_the_worker(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    job = make_job(1)
    job.max_retries = 0
    orchestrator.publish(queue_name, job)
    stats = orchestrator.consume(queue_name, lambda job: 1 / 0, until_empty=True, max_retries=5)
    assert (stats.retried, stats.dead_lettered) == (0, 1)
    orchestrator.delete_queue(dead_letter_queue_name(queue_name))


def _poison(backend: str) -> list[tuple[str, OutgoingMessage]]:
    good = dumps(make_job(99))
    kinds = [
        ("invalid JSON", OutgoingMessage(b"{not json", {"content_type": CONTENT_TYPE, "content_encoding": "utf-8"})),
        ("wrong content type", OutgoingMessage(b'{"a": 1}', {"content_type": "application/json", "content_encoding": "utf-8"})),
        ("not a job", OutgoingMessage(b'{"hello": 1}', {"content_type": CONTENT_TYPE, "content_encoding": "utf-8"})),
        ("unknown version", OutgoingMessage(json.dumps({"mindtrace_job": 7, "job": {}}).encode(), {"content_type": CONTENT_TYPE, "content_encoding": "utf-8"})),
        ("truncated", OutgoingMessage(good[: len(good) // 2].encode(), {"content_type": CONTENT_TYPE, "content_encoding": "utf-8"})),
        ("oversize", OutgoingMessage(dumps(make_job(98, label="x" * 20_000)).encode(), {"content_type": CONTENT_TYPE, "content_encoding": "utf-8"})),
    ]
    return kinds


def test_poison_messages_are_dead_lettered_and_good_jobs_processed(
    orchestrator: Orchestrator, backend: str, queue_name: str
) -> None:
    # Given bad messages of six kinds between good jobs, and a job of a payload type nobody registered
    orchestrator.declare_queue(queue_name)
    poison = _poison(backend)
    for number, (_, message) in enumerate(poison):
        orchestrator.publish(queue_name, make_job(number))
        orchestrator._send(queue_name, [orchestrator._encode(message)], None)
    unknown_type = dumps(make_job(50)).replace("tests.conftest.SampleInput", "nowhere.Unregistered")
    raw = OutgoingMessage(unknown_type.encode(), {"content_type": CONTENT_TYPE, "content_encoding": "utf-8"})
    orchestrator._send(queue_name, [orchestrator._encode(raw)], None)
    processed: list[Job] = []
    # When a worker drains the queue
    stats = orchestrator.consume(queue_name, processed.append, until_empty=True, max_message_bytes=10_000)
    # Expect every good job processed (the unknown type as a generic JobInput with its fields)
    assert sorted(job.payload.input.value for job in processed) == [*range(len(poison)), 50]  # type: ignore[attr-defined]
    assert stats.dead_lettered == len(poison)
    # and every bad one in the dead-letter queue, unchanged, with a reason
    letters = orchestrator.dead_letters(queue_name)
    assert [letter.body for letter in letters] == [message.body for _, message in poison]
    reasons = [letter.reason for letter in letters]
    assert "oversize" in reasons[-1] and "content type" not in reasons[0]
    assert all(reason for reason in reasons)
    orchestrator.delete_queue(dead_letter_queue_name(queue_name))


def test_claim_acknowledges_or_retries(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(1))
    with pytest.raises(RuntimeError), orchestrator.claim(queue_name) as job:
        assert job is not None and job.status is ExecutionStatus.RUNNING
        raise RuntimeError("try again")
    assert orchestrator.count_queue_messages(queue_name) == 1
    with orchestrator.claim(queue_name, timeout=1) as job:
        assert job is not None and job.attempts == 2 and job.error == "RuntimeError: try again"
    assert orchestrator.count_queue_messages(queue_name) == 0
    with orchestrator.claim(queue_name, timeout=0.1) as job:
        assert job is None


def test_claim_dead_letters_a_poison_message(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    junk = OutgoingMessage(b"junk", {"content_type": "text/plain", "content_encoding": "utf-8"})
    orchestrator._send(queue_name, [orchestrator._encode(junk)], None)
    with pytest.raises(JobDecodeError), orchestrator.claim(queue_name):
        pass
    assert orchestrator.count_queue_messages(queue_name) == 0
    assert orchestrator.count_queue_messages(dead_letter_queue_name(queue_name)) == 1
    orchestrator.delete_queue(dead_letter_queue_name(queue_name))


def test_worker_with_prefetch_one_takes_jobs_in_priority_order(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name, queue_type="priority")
    priorities = [3, 9, 0, 9, 5]
    for value, priority in enumerate(priorities):
        orchestrator.publish(queue_name, make_job(value), priority=priority)
    order: list[int] = []
    orchestrator.consume(queue_name, lambda job: order.append(job.payload.input.value), until_empty=True, prefetch=1)
    assert order == [1, 3, 4, 0, 2]


def test_threads_process_every_job_once(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(200)])
    seen: list[int] = []
    stats = orchestrator.consume(
        queue_name, lambda job: seen.append(job.payload.input.value), until_empty=True, concurrency=4, prefetch=8
    )
    assert stats.completed == 200 and sorted(seen) == list(range(200))


def test_worker_consumes_several_queues(orchestrator: Orchestrator, queue_name: str) -> None:
    other = f"{queue_name}-b"
    orchestrator.declare_queue(queue_name)
    orchestrator.declare_queue(other, queue_type="priority")
    orchestrator.publish(queue_name, make_job(1))
    orchestrator.publish(other, make_job(2), priority=4)
    seen: list[tuple[int, str]] = []
    worker = Worker(orchestrator, [queue_name, other], lambda job: seen.append(job.payload.input.value))
    worker.on_event = lambda event: seen.append(event.queue)  # type: ignore[arg-type]
    worker.run(until_empty=True)
    assert sorted(item for item in seen if isinstance(item, int)) == [1, 2]
    assert {item for item in seen if isinstance(item, str)} == {queue_name, other}


def test_worker_refuses_a_missing_queue(orchestrator: Orchestrator, queue_name: str) -> None:
    with pytest.raises(KeyError):
        orchestrator.consume(queue_name, print, until_empty=True)


def test_a_failing_event_observer_does_not_stop_the_worker(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(3)])

    def observer(event: JobEvent) -> None:
        raise BrokenPipeError("stdout closed")

    stats = orchestrator.consume(queue_name, lambda job: None, until_empty=True, on_event=observer)
    assert stats.completed == 3 and orchestrator.count_queue_messages(queue_name) == 0


def test_stop_before_run_returns_without_consuming(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(1))
    worker = Worker(orchestrator, queue_name, lambda job: None)
    worker.stop()
    assert worker.run().processed == 0
    assert orchestrator.count_queue_messages(queue_name) == 1
    assert worker.run(until_empty=True).processed == 1  # the stop was used up


def test_unacked_counts_where_the_broker_reports_them(orchestrator: Orchestrator, backend: str, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    orchestrator.publish(queue_name, make_job(1))
    with orchestrator.claim(queue_name) as job:
        assert job is not None
        counts = orchestrator.unacked_counts()
        if backend in ("redis", "local"):
            assert counts is not None and counts[queue_name] == 1
        else:  # RabbitMQ: None without the management API; with it, its (sampled) statistics
            assert counts is None or queue_name in counts
    after = orchestrator.unacked_counts()
    assert after is None or after.get(queue_name, 0) == 0


def test_deleting_one_of_a_workers_queues_leaves_the_others_flowing(
    orchestrator: Orchestrator, backend: str, queue_name: str
) -> None:
    # Given a worker on two queues, and a handler that deletes the second queue at its first job
    other = unique("other")
    orchestrator.declare_queue(queue_name)
    orchestrator.declare_queue(other)
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(5)])
    orchestrator.publish_many(other, [make_job(n) for n in range(10, 15)])
    done: list[int] = []

    def handler(job: Job) -> None:
        if not done:
            orchestrator.delete_queue(other)
        done.append(job.payload.input.value)  # type: ignore[attr-defined]

    # When it runs until its queues are empty
    stats = orchestrator.consume([queue_name, other], handler, until_empty=True)
    # Expect every job of the remaining queue done and acknowledged, and the worker alive to the end
    assert set(range(5)) <= set(done)
    assert stats.completed == len(done)
    assert orchestrator.count_queue_messages(queue_name) == 0
    assert (orchestrator.unacked_counts() or {}).get(queue_name, 0) == 0
