"""``bench``: publish and receive N jobs on a scratch queue; throughput, latency percentiles."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..models import Job, JobInput, JobSchema

from .context import CliContext, json_option, pass_cli, queue_type_option
from .jobs import chunks

__all__ = ["bench"]

PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _phase(name: str, jobs: int, latencies: list[float], seconds: float) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "phase": name,
        "jobs": jobs,
        "calls": len(latencies),
        "seconds": seconds,
        "jobs_per_second": jobs / seconds if seconds else 0.0,
        **{f"p{p}_ms": percentile(ordered, p) * 1000 for p in PERCENTILES},
        "max_ms": ordered[-1] * 1000,
    }


def _timed(
    name: str, calls: int, call: Callable[[], int], advance: Callable[[int], None]
) -> dict[str, Any]:
    """Run ``call`` (it returns how many jobs it moved) ``calls`` times; the phase's figures."""
    latencies = []
    moved = 0
    started = time.perf_counter()
    for _ in range(calls):
        before = time.perf_counter()
        jobs = call()
        latencies.append(time.perf_counter() - before)
        moved += jobs
        advance(jobs)
    return _phase(name, moved, latencies, time.perf_counter() - started)


@click.command()
@click.option(
    "--count",
    "-n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Jobs to move.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs per publish call (1: publish; more: publish_many).",
)
@queue_type_option("Type of the scratch queue.")
@click.option(
    "--payload-bytes",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Size of a string field in each job's input.",
)
@json_option
@pass_cli
def bench(cli: CliContext, count: int, batch: int, queue_type: str, payload_bytes: int) -> None:
    """Measure publish and receive throughput and latency.

    COUNT jobs are published, then received, on a scratch queue deleted afterwards.
    Latency percentiles are per broker call: one publish (or publish_many of --batch
    jobs), one receive_message.
    """
    orchestrator = cli.orchestrator
    queue = f"mindtrace-bench-{uuid.uuid4().hex[:12]}"
    template = Job(
        name="bench",
        payload=JobSchema(
            name="bench", input=JobInput.model_validate({"data": "x" * payload_bytes})
        ),
    )
    jobs = [template.model_copy(update={"id": str(uuid.uuid4())}) for _ in range(count)]
    batches = iter(list(chunks(jobs, batch)))
    orchestrator.declare_queue(queue, queue_type)
    try:
        with cli.output.progress(count, "publishing") as advance:
            published = _timed(
                f"publish (batch {batch})",
                math.ceil(count / batch),
                lambda: len(orchestrator.publish_many(queue, next(batches))),
                advance,
            )
        with cli.output.progress(count, "receiving") as advance:
            received = _timed(
                "receive",
                count,
                lambda: int(orchestrator.receive_message(queue, timeout=5) is not None),
                advance,
            )
    finally:
        orchestrator.delete_queue(queue)
    phases = [published, received]
    output = cli.output
    if output.json_mode:
        output.json(
            {
                "broker": orchestrator.client.url,
                "queue_type": queue_type,
                "count": count,
                "phases": phases,
            }
        )
        return
    headers = ("phase", "jobs", "seconds", "jobs/s", *(f"p{p} ms" for p in PERCENTILES), "max ms")
    rows = [
        (
            phase["phase"],
            phase["jobs"],
            phase["seconds"],
            round(phase["jobs_per_second"]),
            *(phase[key] for key in (*(f"p{p}_ms" for p in PERCENTILES), "max_ms")),
        )
        for phase in phases
    ]
    output.table(
        headers, rows, title=f"bench: {count} jobs, {queue_type} queue on {orchestrator.client.url}"
    )
