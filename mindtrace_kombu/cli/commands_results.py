"""``job`` and ``jobs``: job status and results from the result store."""

from __future__ import annotations

from typing import Any

import click

from ..errors import JobNotFound
from ..models import ExecutionStatus, Job
from .context import CliContext, QueueMissingError, json_option, pass_cli

__all__ = ["job", "jobs"]

result_backend_option = click.option(
    "--result-backend",
    "-r",
    metavar="URL",
    envvar="MINDTRACE_RESULT_BACKEND",
    help="Result store: redis://, sqlite:///PATH, postgresql://... [default: $MINDTRACE_RESULT_BACKEND, "
    "else the broker's own (local, Redis)].",
)


def _orchestrator(cli: CliContext, result_backend: str | None) -> Any:
    orchestrator = cli.orchestrator
    if result_backend:
        from ..results.urls import result_store_from_url  # the store's client only when asked for

        try:
            store = result_store_from_url(result_backend)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--result-backend") from None
        if orchestrator.results is not None:
            orchestrator.results.close()
        orchestrator.results = store
    return orchestrator


def _row(job: Job) -> dict[str, Any]:
    output = job.payload.output
    return {
        "id": job.id, "name": job.name, "status": job.status.value, "attempts": job.attempts,
        "created_at": job.created_at, "started_at": job.started_at, "completed_at": job.completed_at,
        "error": job.error, "dead_lettered": job.dead_lettered,
        "output": None if output is None else output.model_dump(mode="json"),
    }


@click.command()
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job is completed, failed or cancelled.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS", help="With --wait: give up after this long.")
@result_backend_option
@json_option
@pass_cli
def job(cli: CliContext, job_id: str, wait: bool, timeout: float | None, result_backend: str | None) -> None:
    """Show JOB_ID's status, attempts, timestamps, output and error (exit 3 if unknown)."""
    orchestrator = _orchestrator(cli, result_backend)
    try:
        found = orchestrator.wait_for(job_id, timeout=timeout) if wait else orchestrator.get_job(job_id)
    except JobNotFound as exc:
        raise QueueMissingError(str(exc)) from None
    if found is None:
        raise QueueMissingError(str(JobNotFound(job_id)))
    row = _row(found)
    if cli.output.json_mode:
        cli.output.json({**row, "traceback": found.traceback})
        return
    for key, value in row.items():
        if value is not None:
            cli.output.line(f"{key + ':':<14}{value}")
    if found.traceback:
        cli.output.line(f"traceback:\n{found.traceback.rstrip()}")


@click.command()
@click.option("--queue", "-q", metavar="NAME", help="Only this queue's jobs.")
@click.option("--status", "-s", type=click.Choice([status.value for status in ExecutionStatus]), help="Only jobs in this status.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many, newest first.")
@result_backend_option
@json_option
@pass_cli
def jobs(cli: CliContext, queue: str | None, status: str | None, limit: int, result_backend: str | None) -> None:
    """List recorded jobs, newest first."""
    found = _orchestrator(cli, result_backend).list_jobs(queue, status, limit)
    if cli.output.json_mode:
        cli.output.json([_row(item) for item in found])
        return
    cli.output.table(
        ["id", "name", "status", "attempts", "created", "error"],
        [[item.id, item.name, item.status.value, item.attempts, item.created_at, item.error or ""] for item in found],
    )
