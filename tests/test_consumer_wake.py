"""``Consumer.wake()`` ends a waiting ``fetch`` at once on every backend, so a stopping worker
does not sit out an idle fetch."""

from __future__ import annotations

import threading

import pytest

from mindtrace_kombu import Orchestrator, Worker
from mindtrace_kombu import worker as worker_module

from .conftest import make_job

pytestmark = pytest.mark.timeout(60)
LONG = 30.0  # a fetch timeout no test waits for


def test_wake_ends_a_waiting_fetch(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    consumer = orchestrator.backend.consumer([queue_name], 1)
    fetched: list[object] = []
    fetching = threading.Thread(target=lambda: fetched.append(consumer.fetch(1, LONG)))
    try:
        fetching.start()
        # wake until the fetch has returned: a wake before the fetch waits ends its next wait too
        while fetching.is_alive():
            consumer.wake()
            fetching.join(0.05)
        assert fetched == [[]]
    finally:
        consumer.close()


def test_wake_before_fetch_makes_the_next_fetch_return_what_there_is(orchestrator: Orchestrator, queue_name: str) -> None:
    orchestrator.declare_queue(queue_name)
    consumer = orchestrator.backend.consumer([queue_name], 2)
    try:
        consumer.wake()
        assert consumer.fetch(2, LONG) == []
        orchestrator.publish(queue_name, make_job(1))
        deliveries = consumer.fetch(2, LONG)  # the wake-up was used: this one waits for the job
        assert len(deliveries) == 1
        deliveries[0].ack()
    finally:
        consumer.close()


def test_stop_from_a_handler_at_a_batch_boundary_returns_without_an_idle_fetch(
    orchestrator: Orchestrator, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given idle fetches longer than the test waits, exactly one full prefetch batch, and a
    # handler that stops the worker on the last job (the worker is then fetching again)
    monkeypatch.setattr(worker_module, "_IDLE_FETCH", LONG)
    orchestrator.declare_queue(queue_name)
    orchestrator.publish_many(queue_name, [make_job(n) for n in range(4)])
    done: list[int] = []

    def handler(job: object) -> None:
        done.append(1)
        if len(done) == 4:
            worker.stop()

    worker = Worker(orchestrator, queue_name, handler, concurrency=2, prefetch=4)
    running = threading.Thread(target=worker.run)
    running.start()
    running.join(LONG / 2)  # without the wake-up, run() would sit out the idle fetch
    assert not running.is_alive() and len(done) == 4
