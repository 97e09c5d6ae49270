"""``publish``, ``submit`` and ``receive``: feeding and draining queues."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import IO

import click

from ..errors import JobDecodeError
from ..models import Job
from .context import CliContext, json_option, pass_cli
from .jobs import build_jobs, chunks, copies, job_options

__all__ = ["publish", "receive", "submit"]


def _report(cli: CliContext, verb: str, ids_by_queue: dict[str, list[str]], seconds: float) -> None:
    ids = [job_id for batch in ids_by_queue.values() for job_id in batch]
    names = ", ".join(ids_by_queue)
    if len(ids) == 1:
        text = f"{verb} job {ids[0]} to {names}"
    else:
        rate = len(ids) / max(seconds, 1e-9)
        text = f"{verb} {len(ids)} jobs to {names} in {seconds:.2f} s ({rate:,.0f} jobs/s)"
    data = {
        "queues": {name: len(batch) for name, batch in ids_by_queue.items()},
        "count": len(ids),
        "ids": ids,
        "seconds": round(seconds, 6),
    }
    cli.output.result(data, text)


@click.command()
@click.argument("queue")
@job_options
@json_option
@pass_cli
def publish(
    cli: CliContext,
    queue: str,
    source: IO[str] | None,
    name: str | None,
    job_type: str,
    inputs: Sequence[str],
    input_type: str | None,
    priority: int | None,
    count: int,
    chunk_size: int,
    confirm: bool,
) -> None:
    """Publish jobs to QUEUE, which must exist (see `declare`).

    \b
    Examples:
      mindtrace-jobs publish images --name resize -i width=640 -i 'tags=["a"]'
      echo '{"name": "resize", "input": {"width": 640}}' | mindtrace-jobs publish images -f -
      mindtrace-jobs publish images -f job.json --count 10000 --priority 5
    """
    jobs = list(copies(build_jobs(source, name, job_type, inputs, input_type), count))
    orchestrator = cli.orchestrator
    started = time.perf_counter()
    ids: list[str] = []
    with cli.output.progress(len(jobs), f"publishing to {queue}") as advance:
        for chunk in chunks(jobs, chunk_size):
            ids += orchestrator.publish_many(queue, chunk, priority=priority, confirm=confirm)
            advance(len(chunk))
    _report(cli, "published", {queue: ids}, time.perf_counter() - started)


@click.command()
@job_options
@json_option
@pass_cli
def submit(
    cli: CliContext,
    source: IO[str] | None,
    name: str | None,
    job_type: str,
    inputs: Sequence[str],
    input_type: str | None,
    priority: int | None,
    count: int,
    chunk_size: int,
    confirm: bool,
) -> None:
    """Submit jobs to the queue their job type routes to.

    The queue is declared (fifo) on first use.

    \b
    Routes:
      ml_training       -> ml_training_jobs
      object_detection  -> detection_jobs
      data_processing   -> data_jobs
      classification    -> classification_jobs
      default           -> default_jobs
    """
    jobs = list(copies(build_jobs(source, name, job_type, inputs, input_type), count))
    orchestrator = cli.orchestrator
    started = time.perf_counter()
    by_queue: dict[str, list[Job]] = {}
    for job in jobs:
        by_queue.setdefault(orchestrator.route(job), []).append(job)
    ids: dict[str, list[str]] = {}
    with cli.output.progress(len(jobs), "submitting") as advance:
        for queue, queued in by_queue.items():
            ids[queue] = [
                orchestrator.submit(queued[0], priority=priority, confirm=confirm)
            ]  # declares on first use
            advance(1)
            for chunk in chunks(queued[1:], chunk_size):
                ids[queue] += orchestrator.publish_many(queue, chunk, priority=priority, confirm=confirm)
                advance(len(chunk))
    _report(cli, "submitted", ids, time.perf_counter() - started)


@click.command()
@click.argument("queue")
@click.option(
    "--timeout",
    "-t",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Seconds to wait for each job when the queue is empty.",
)
@click.option(
    "--count",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Receive up to COUNT jobs; stops early when the queue stays empty.",
)
@json_option
@pass_cli
def receive(cli: CliContext, queue: str, timeout: float, count: int) -> None:
    """Take jobs off QUEUE and print each as one JSON line.

    At most once: a received job has left the queue (use `worker` to acknowledge after work).
    A message that is not a job is moved to QUEUE.dlq and reported on stderr.
    """
    received = 0
    while received < count:
        try:
            job = cli.orchestrator.receive_message(queue, timeout=timeout or None)
        except JobDecodeError as exc:
            cli.output.note(f"warning: {exc}")
            continue
        if job is None:
            break
        cli.output.json(job.model_dump(mode="json"))
        received += 1
    if received < count:
        cli.output.note(f"received {received} of {count}: {queue!r} is empty")
