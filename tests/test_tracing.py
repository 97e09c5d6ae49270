"""OpenTelemetry: a job's trace goes from ``publish`` in one process to its handler in another.

The test process records its spans with the SDK's ``InMemorySpanExporter``; the worker processes
(``tests/tracing_worker.py``, ``tests/celery_tracing_app.py``) write theirs to a file as JSON.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mindtrace_kombu import Job, Orchestrator, QueueNotFound
from mindtrace_kombu.dead_letters import list_dead_letters

from .conftest import REDIS_URL, broker_url, make_client, make_job, unique, wait_until
from .tracing_spans import as_dict, read

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
Span = dict[str, Any]


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """This process's spans (the producers'), in memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return spans


def publish_traced(orchestrator: Orchestrator, exporter: InMemorySpanExporter, queue: str, jobs: list[Job]) -> dict[str, Span]:
    """Publish each job; its producer span by job id."""
    producers = {}
    for job in jobs:
        exporter.clear()
        orchestrator.publish(queue, job)
        (span,) = exporter.get_finished_spans()
        producers[job.id] = as_dict(span)
    return producers


def processed(spans: list[Span], job_id: str) -> list[Span]:
    """The CONSUMER spans of a job, by attempt."""
    mine = [span for span in spans if span["kind"] == "CONSUMER" and span["attributes"]["messaging.message.id"] == job_id]
    return sorted(mine, key=lambda span: span["attributes"]["mindtrace.job.attempt"])


def by_id(spans: list[Span], span_id: str | None) -> Span:
    return next(span for span in spans if span["span_id"] == span_id)


def assert_child_of(span: Span, parent: Span) -> None:
    """Same trace, ``parent`` as parent and as link."""
    assert span["trace_id"] == parent["trace_id"]
    assert span["parent_span_id"] == parent["span_id"]
    assert span["links"] == [f"{parent['trace_id']}-{parent['span_id']}"]


@pytest.mark.parametrize("backend", ["redis", "rabbitmq"])
def test_handler_spans_continue_the_producer_trace_in_another_process(
    orchestrator: Orchestrator, exporter: InMemorySpanExporter, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Given jobs published here and handled by a worker process (one succeeds, one fails once,
    one always fails), expect each handler span to be a CONSUMER child of its producer span;
    a retried attempt in the same trace, under the retry's PRODUCER span, itself a child of the
    original publish; and the dead letter to keep the trace headers."""
    queue = unique("trace")
    orchestrator.declare_queue(queue)
    ok, flaky, doomed = (make_job(i, label=label) for i, label in enumerate(["ok", "flaky", "doomed"]))
    producers = publish_traced(orchestrator, exporter, queue, [ok, flaky, doomed])
    assert {span["name"] for span in producers.values()} == {f"publish {queue}"}
    assert {span["kind"] for span in producers.values()} == {"PRODUCER"}
    spans_file = tmp_path / "spans.jsonl"
    subprocess.run(
        [sys.executable, "-m", "tests.tracing_worker", broker_url(request.node.callspec.params["backend"]), queue, str(spans_file)],
        cwd=ROOT, check=True, timeout=90,
    )
    spans = read(spans_file)

    (ok_span,) = processed(spans, ok.id)
    assert ok_span["name"] == f"process {queue}"
    assert ok_span["status"] == "UNSET"
    assert_child_of(ok_span, producers[ok.id])

    first, second = processed(spans, flaky.id)
    assert (first["status"], second["status"]) == ("ERROR", "UNSET")
    assert_child_of(first, producers[flaky.id])
    retry = by_id(spans, second["parent_span_id"])
    assert (retry["name"], retry["kind"]) == (f"publish {queue}", "PRODUCER")
    assert retry["parent_span_id"] == producers[flaky.id]["span_id"]
    assert_child_of(second, retry)

    attempts = processed(spans, doomed.id)
    assert [span["status"] for span in attempts] == ["ERROR", "ERROR"]
    assert {span["trace_id"] for span in attempts} == {producers[doomed.id]["trace_id"]}
    (letter,) = list_dead_letters(orchestrator, queue)
    assert letter.headers["traceparent"].split("-")[1:3] == [attempts[1]["trace_id"], attempts[1]["parent_span_id"]]


def test_celery_task_span_continues_the_producer_trace(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    """Given jobs published through ``Orchestrator.from_celery`` and run by a real ``celery
    worker`` on Redis, expect the task's CONSUMER span to be a child of the producer span, and
    a Celery retry to stay in the trace (under the retry's PRODUCER span)."""
    celery = pytest.importorskip("celery")
    from mindtrace_kombu.config import exact_order_transport

    from .celery_test_app_harness import celery_worker

    make_client("redis")
    queue = unique("celery-trace")
    app = celery.Celery("producer")
    app.conf.update(broker_url=REDIS_URL, broker_transport=exact_order_transport(REDIS_URL))
    orchestrator = Orchestrator.from_celery(app, tasks={queue: "mindtrace_test.traced"})
    spans_file = tmp_path / "spans.jsonl"
    ok, flaky = make_job(1, label="ok"), make_job(2, label="flaky")
    try:
        orchestrator.declare_queue(queue)
        producers = publish_traced(orchestrator, exporter, queue, [ok, flaky])
        env = {"CELERY_TEST_BROKER": REDIS_URL, "CELERY_TEST_QUEUE": queue, "CELERY_TEST_SPANS": str(spans_file)}
        with celery_worker("tests.celery_tracing_app", [queue], env, tmp_path / "worker.log", unique("worker")):
            spans = wait_until(
                lambda: len(processed(found := read(spans_file), ok.id) + processed(found, flaky.id)) == 3 and found,
                what="3 task spans",
            )
    finally:
        try:
            orchestrator.delete_queue(queue)
        except QueueNotFound:
            pass
        for job in (ok, flaky):
            if orchestrator.results is not None:
                orchestrator.forget(job.id)
        orchestrator.close()
    (ok_span,) = processed(spans, ok.id)
    assert ok_span["name"] == f"process {queue}"
    assert_child_of(ok_span, producers[ok.id])
    first, second = processed(spans, flaky.id)
    assert_child_of(first, producers[flaky.id])
    assert first["status"] == "ERROR"
    retry = by_id(spans, second["parent_span_id"])
    assert (retry["kind"], retry["parent_span_id"]) == ("PRODUCER", first["span_id"])
    assert_child_of(second, retry)
    assert second["attributes"]["mindtrace.job.attempt"] == 2
