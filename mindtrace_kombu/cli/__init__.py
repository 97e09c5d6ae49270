"""``mindtrace-jobs``: inspect, feed, drain and run job queues from the shell.

Layout: :mod:`.context` (global options, exit codes, error translation), :mod:`.broker` (which
broker), :mod:`.output` (tables, JSON, progress bars), :mod:`.jobs` (jobs from JSON or options),
and one ``commands_*`` module per command family.
"""

from __future__ import annotations

import logging

import click
import kombu

from .. import __version__
from ..config import DEFAULT_BROKER_URL
from .broker import DEFAULT_CONFIG_MODULE
from .commands_bench import bench
from .commands_dashboard import dashboard
from .commands_dlq import dlq
from .commands_jobs import publish, receive, submit
from .commands_metrics import exporter
from .commands_queues import declare, delete, peek, purge, queues
from .commands_results import job, jobs
from .commands_worker import worker
from .commands_workers import workers
from .context import (
    EXIT_ABORTED,
    EXIT_BROKER_UNAVAILABLE,
    EXIT_INVALID_INPUT,
    EXIT_QUEUE_NOT_FOUND,
    EXIT_USAGE,
    CliContext,
    JobsGroup,
)
from .output import Output

__all__ = ["cli", "main"]

PROG_NAME = "mindtrace-jobs"
LOG_LEVELS = ("debug", "info", "warning", "error")

EPILOG = f"""\b
Broker: --broker, else $MINDTRACE_BROKER_URL, else $CELERY_BROKER_URL, else broker_url
of the --config module ({DEFAULT_CONFIG_MODULE} if importable; its broker_transport_options
apply too, as in Celery), else {DEFAULT_BROKER_URL}.
Passwords are masked in all output.

\b
Exit codes:
  0  success
  {EXIT_ABORTED}  declined at a prompt, interrupted, or an unexpected error
  {EXIT_USAGE}  usage error: bad option or argument, bad broker URL or config module
  {EXIT_QUEUE_NOT_FOUND}  queue not found
  {EXIT_BROKER_UNAVAILABLE}  broker unavailable
  {EXIT_INVALID_INPUT}  invalid input: priority, queue name, queue type, job JSON

\b
Shell completion (bash; use zsh_source or fish_source for those shells):
  eval "$(_MINDTRACE_JOBS_COMPLETE=bash_source mindtrace-jobs)"
"""


@click.group(cls=JobsGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--broker", "-b", metavar="URL", help="Kombu broker URL: redis://, amqp://, memory:// ..."
)
@click.option(
    "--config",
    metavar="MODULE",
    help=f"Celery-style config module read for broker_url [default: {DEFAULT_CONFIG_MODULE}].",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Seconds to wait for the broker [default: config's broker_connection_timeout, else 5].",
)
@click.option(
    "--json",
    "json_mode",
    is_flag=True,
    help="Machine-readable JSON output (also accepted after a command).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="warning",
    show_default=True,
    help="Logging on stderr; debug also prints tracebacks.",
)
@click.version_option(
    __version__,
    "--version",
    "-V",
    prog_name=PROG_NAME,
    message=f"%(prog)s %(version)s (kombu {kombu.__version__})",
)
@click.pass_context
def cli(
    ctx: click.Context,
    broker: str | None,
    config: str | None,
    connect_timeout: float | None,
    json_mode: bool,
    log_level: str,
) -> None:
    """Inspect, feed, drain and run mindtrace-kombu job queues on Redis, RabbitMQ or in memory."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    state = CliContext(broker, config, connect_timeout, Output(json_mode))
    ctx.obj = state
    ctx.call_on_close(state.close)


for command in (queues, peek, declare, publish, submit, receive, purge, delete, dlq, worker, workers, exporter, bench, job, jobs, dashboard):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name=PROG_NAME)
