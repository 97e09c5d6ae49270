"""``worker``: run a handler over queues with acknowledgements, retries and dead letters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import click

from .context import CliContext, import_object, json_option, pass_cli
from .output import Output

if TYPE_CHECKING:
    from ..worker import JobEvent, WorkerStats

__all__ = ["worker"]


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


class _EventLog:
    """Prints one line per job and, every ``interval`` seconds, a throughput summary."""

    def __init__(self, output: Output, interval: float) -> None:
        self.output = output
        self.interval = interval
        self.totals: Counter[str] = Counter()
        self._window = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def on_event(self, event: JobEvent) -> None:
        with self._lock:
            self.totals[event.outcome] += 1
            self._window += 1
        error = f" attempt {event.attempts}: {event.error}" if event.error else ""
        self.output.result(
            {
                "event": "job",
                "time": _now(),
                "job_id": event.job_id,
                "queue": event.queue,
                "duration": event.duration,
                "outcome": event.outcome,
                "attempts": event.attempts,
                "error": event.error,
            },
            f"{_now()} {event.outcome:<13} {event.queue} {event.job_id} "
            f"{event.duration * 1000:.1f} ms{error}",
        )

    def run_summaries(self) -> None:
        """Loop of the summary thread; returns when :meth:`stop` is called."""
        while not self._stopped.wait(self.interval):
            with self._lock:
                window, self._window = self._window, 0
                totals = dict(self.totals)
            rate = window / self.interval
            done = (
                ", ".join(f"{n} {outcome}" for outcome, n in sorted(totals.items())) or "none yet"
            )
            self.output.result(
                {"event": "summary", "time": _now(), "jobs_per_second": rate, "totals": totals},
                f"{_now()} summary       {rate:,.1f} jobs/s over {self.interval:g} s; "
                f"total: {done}",
            )

    def stop(self) -> None:
        self._stopped.set()


def _split_queues(values: Sequence[str]) -> list[str]:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("name at least one queue", param_hint="-Q")
    return names


@click.command()
@click.argument("handler", metavar="MODULE:HANDLER")
@click.option(
    "-Q",
    "--queues",
    "queue_options",
    multiple=True,
    required=True,
    metavar="Q1,Q2",
    help="Queues to consume, comma-separated or repeated.",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs handled at the same time (threads).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    help="Unacknowledged jobs held at once (default: concurrency).",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Retries (with backoff) before a failing job is dead-lettered.",
)
@click.option(
    "--burst", is_flag=True, help="Exit once the queues are empty (like `rq worker --burst`)."
)
@click.option(
    "--summary-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds between throughput summaries.",
)
@json_option
@pass_cli
def worker(
    cli: CliContext,
    handler: str,
    queue_options: Sequence[str],
    concurrency: int,
    prefetch: int | None,
    max_retries: int,
    burst: bool,
    summary_interval: float,
) -> None:
    """Run MODULE:HANDLER on the jobs of the -Q queues.

    HANDLER is called with each Job; the job is acknowledged when it returns, retried when it
    raises, and dead-lettered to QUEUE.dlq when its retries are spent. One line is printed per
    job (time, outcome, queue, id, duration), and a throughput summary every --summary-interval.
    Ctrl-C or SIGTERM stops it cleanly: jobs in progress finish and are acknowledged.

    \b
    Example:
      mindtrace-jobs worker tasks:resize -Q images,thumbnails --concurrency 4
    """
    from ..worker import Worker

    function = import_object(handler, "MODULE:HANDLER")
    if not callable(function):
        raise click.BadParameter(f"{handler!r} is not callable", param_hint="MODULE:HANDLER")
    names = _split_queues(queue_options)
    orchestrator = cli.connect(reconnect=True)
    events = _EventLog(cli.output, summary_interval)
    runner = Worker(
        orchestrator,
        names,
        function,
        concurrency=concurrency,
        prefetch=prefetch,
        max_retries=max_retries,
        on_event=events.on_event,
    )
    cli.output.result(
        {
            "event": "started",
            "time": _now(),
            "broker": orchestrator.client.url,
            "queues": names,
            "handler": handler,
            "concurrency": concurrency,
        },
        f"{_now()} started       {handler} on {', '.join(names)} at {orchestrator.client.url} "
        f"(concurrency {concurrency}{', burst' if burst else ''})",
    )
    summaries = threading.Thread(
        target=events.run_summaries, name="mindtrace-jobs-summary", daemon=True
    )
    summaries.start()
    try:
        stats = runner.run(until_empty=burst)
    finally:
        events.stop()
    _stopped(cli.output, stats)


def _stopped(output: Output, stats: WorkerStats) -> None:
    rate = stats.processed / stats.elapsed if stats.elapsed else 0.0
    output.result(
        {
            "event": "stopped",
            "time": _now(),
            "processed": stats.processed,
            "completed": stats.completed,
            "retried": stats.retried,
            "dead_lettered": stats.dead_lettered,
            "elapsed": stats.elapsed,
            "jobs_per_second": rate,
        },
        f"{_now()} stopped       {stats.processed} processed ({stats.completed} completed, "
        f"{stats.retried} retried, {stats.dead_lettered} dead-lettered) in {stats.elapsed:.2f} s "
        f"({rate:,.1f} jobs/s)",
    )
