"""``worker``: run a handler over queues with acknowledgements, retries and dead letters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import click

from .commands_metrics import serve_worker_metrics
from .context import CliContext, import_object, json_option, pass_cli
from .output import Output

if TYPE_CHECKING:
    from ..worker import JobEvent, Pool, WorkerStats

#: The library's default (``worker.SHUTDOWN_GRACE``), repeated so that --help imports no broker code.
SHUTDOWN_GRACE = 30.0

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
    type=int,
    default=1,
    show_default=True,
    help="Jobs handled at the same time (threads, or child processes with --pool processes).",
)
@click.option(
    "--pool",
    type=click.Choice(["threads", "processes"]),
    default="threads",
    show_default=True,
    help="Where handlers run; processes for CPU-bound handlers.",
)
@click.option(
    "--prefetch",
    type=int,
    help="Unacknowledged jobs held at once (default: 4 x concurrency, as Celery).",
)
@click.option(
    "--max-retries",
    type=int,
    default=3,
    show_default=True,
    help="Retries (with backoff) before a failing job is dead-lettered.",
)
@click.option(
    "--time-limit",
    type=float,
    metavar="SECONDS",
    help="A job running longer has failed; processes: its child is killed, threads: it runs on.",
)
@click.option(
    "--shutdown-grace",
    type=float,
    default=SHUTDOWN_GRACE,
    show_default=True,
    metavar="SECONDS",
    help="On the first Ctrl-C/SIGTERM, how long jobs in progress may finish before a cold stop.",
)
@click.option(
    "--wait-for-queue",
    is_flag=True,
    help="Wait for queues that do not exist yet instead of exiting (code 3).",
)
@click.option("--declare", is_flag=True, help="Declare queues that do not exist (fifo).")
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
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (/metrics); needs mindtrace-kombu[metrics].",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address of the metrics server."
)
@json_option
@pass_cli
def worker(
    cli: CliContext,
    handler: str,
    queue_options: Sequence[str],
    concurrency: int,
    pool: Pool,
    prefetch: int | None,
    max_retries: int,
    time_limit: float | None,
    shutdown_grace: float,
    wait_for_queue: bool,
    declare: bool,
    burst: bool,
    summary_interval: float,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run MODULE:HANDLER on the jobs of the -Q queues.

    HANDLER is called with each Job; the job is acknowledged when it returns, retried when it
    raises (or runs past --time-limit), and dead-lettered to QUEUE.dlq when its retries are
    spent. One line is printed per job (time, outcome, queue, id, duration), and a throughput
    summary every --summary-interval.

    The first Ctrl-C or SIGTERM is a warm shutdown: prefetched jobs go back to the queue, jobs in
    progress get --shutdown-grace seconds to finish and be acknowledged. The second (or the grace
    running out) is a cold one: unfinished jobs go back to the queue, child processes are killed.

    \b
    Example:
      mindtrace-jobs worker tasks:resize -Q images,thumbnails --concurrency 4
      mindtrace-jobs worker tasks:render -Q frames --pool processes -c 4 --time-limit 60
    """
    from ..errors import InvalidArgument
    from ..worker import Worker

    function = import_object(handler, "MODULE:HANDLER")
    if not callable(function):
        raise click.BadParameter(f"{handler!r} is not callable", param_hint="MODULE:HANDLER")
    names = _split_queues(queue_options)
    orchestrator = cli.connect(reconnect=True)
    events = _EventLog(cli.output, summary_interval)
    try:
        runner = Worker(
            orchestrator,
            names,
            function,
            concurrency=concurrency,
            prefetch=prefetch,
            pool=pool,
            time_limit=time_limit,
            shutdown_grace=shutdown_grace,
            max_retries=max_retries,
            on_event=events.on_event,
            wait_for_queues=wait_for_queue,
            declare_queues=declare,
        )
    except InvalidArgument as exc:  # before the broker is used: a usage error (exit 2)
        raise click.BadParameter(str(exc), param_hint=f"--{exc.name.replace('_', '-')}") from None
    cli.output.result(
        {
            "event": "started",
            "time": _now(),
            "broker": orchestrator.client.url,
            "queues": names,
            "handler": handler,
            "concurrency": concurrency,
            "pool": pool,
        },
        f"{_now()} started       {handler} on {', '.join(names)} at {orchestrator.client.url} "
        f"(concurrency {concurrency}, {pool}{', burst' if burst else ''})",
    )
    stop_metrics = (
        None
        if metrics_port is None
        else serve_worker_metrics(cli, runner, metrics_port, metrics_host)
    )
    summaries = threading.Thread(
        target=events.run_summaries, name="mindtrace-jobs-summary", daemon=True
    )
    summaries.start()
    try:
        stats = runner.run(until_empty=burst)
    finally:
        events.stop()
        if stop_metrics is not None:
            stop_metrics()
    _stopped(cli.output, stats)


def _stopped(output: Output, stats: WorkerStats) -> None:
    rate = stats.processed / stats.elapsed if stats.elapsed else 0.0
    returned = f", {stats.returned} returned to the queue" if stats.returned else ""
    output.result(
        {
            "event": "stopped",
            "time": _now(),
            "processed": stats.processed,
            "completed": stats.completed,
            "retried": stats.retried,
            "dead_lettered": stats.dead_lettered,
            "returned": stats.returned,
            "elapsed": stats.elapsed,
            "jobs_per_second": rate,
        },
        f"{_now()} stopped       {stats.processed} processed ({stats.completed} completed, "
        f"{stats.retried} retried, {stats.dead_lettered} dead-lettered{returned}) "
        f"in {stats.elapsed:.2f} s "
        f"({rate:,.1f} jobs/s)",
    )
