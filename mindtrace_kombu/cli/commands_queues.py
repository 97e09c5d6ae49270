"""``queues``, ``declare``, ``purge`` and ``delete``: inspecting and managing queues."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import click

from ..inspection import Point, queue_rows, rates
from ..models import BackendType
from .context import CliContext, json_option, pass_cli, queue_names_option, queue_type_option

__all__ = ["confirm", "declare", "delete", "peek", "purge", "queues", "yes_option"]

yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def _rows(cli: CliContext, names: Sequence[str]) -> list[dict[str, Any]]:
    """The queues' rows (:func:`..inspection.queue_rows`) as the JSON output names them."""
    return [
        {"name": row.name, "type": row.kind, "max_priority": row.max_priority, "ready": row.ready,
         "unacked": row.in_flight, "dead_letters": row.dead_letters, "consumers": row.consumers,
         "published": row.published}
        for row in queue_rows(cli.orchestrator, names)
    ]


_HEADERS = ("queue", "type", "max priority", "ready", "unacked", "dead letters", "consumers")


@click.command()
@queue_names_option(
    "Show only this queue (on RabbitMQ without the management API, the way to name queues AMQP cannot list). Repeatable."
)
@click.option("--watch", is_flag=True, help="Redraw the table every --interval seconds, with publish and ack rates, until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds between redraws of --watch.")
@json_option
@pass_cli
def queues(cli: CliContext, names: Sequence[str], watch: bool, interval: float) -> None:
    """List queues: type, max priority, ready, unacknowledged (in flight), dead letters, consumers.

    \b
    Which queues are listed:
      redis, memory   every queue declared through mindtrace-kombu on the broker
      rabbitmq        with the management plugin, every queue; without it (AMQP cannot
                      list queues) the routed queues (default_jobs, ...)
      --queue NAME    only the named queues
    Dead letters is the ready count of NAME.dlq when it exists. Unacked (delivered to a
    worker, not yet acknowledged) is shown where the broker reports it: Redis, and RabbitMQ
    with the management plugin (AMQP itself reports ready messages only). Consumers: the
    broker's count on RabbitMQ, the live workers of the registry elsewhere.
    """
    orchestrator = cli.orchestrator
    output = cli.output
    for name in names:
        orchestrator.queue_spec(name)  # QueueNotFound (exit 3) for a name that does not exist
    rows = _rows(cli, names)
    if watch:
        _watch(cli, names, rows, interval)
        return
    if output.json_mode:
        output.json({"broker": orchestrator.client.url, "queues": rows})
        return
    output.table(_HEADERS, [_cells(row) for row in rows], title=f"Queues on {orchestrator.client.url}")
    if orchestrator.client.backend is BackendType.RABBITMQ and not names:
        output.note(
            "note: without RabbitMQ's management plugin, only routed queues are listed; "
            "name others with --queue"
        )
    elif orchestrator.client.backend is BackendType.LOCAL:
        output.note(
            "note: memory:// queues live inside one process; this command started an empty broker"
        )


def _cells(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[key] for key in ("name", "type", "max_priority", "ready", "unacked", "dead_letters", "consumers"))


def _watch(cli: CliContext, names: Sequence[str], rows: list[dict[str, Any]], interval: float) -> None:
    """Redraw the table (with rates; JSON: one line per sample) until Ctrl-C."""
    output = cli.output
    points = {row["name"]: _point(row, time.monotonic()) for row in rows}
    try:
        while True:
            time.sleep(interval)
            now, rows = time.monotonic(), _rows(cli, names)
            for row in rows:
                point = _point(row, now)
                previous = points.get(row["name"])
                row["publish_rate"], row["ack_rate"] = rates((previous, point), 0) if previous else (None, None)
                points[row["name"]] = point
            if output.json_mode:
                output.json({"broker": cli.orchestrator.client.url, "queues": rows})
                continue
            click.clear()
            output.table(
                (*_HEADERS, "publish/s", "ack/s"),
                [(*_cells(row), _rate(row["publish_rate"]), _rate(row["ack_rate"])) for row in rows],
                title=f"Queues on {cli.orchestrator.client.url} (every {interval:g} s; Ctrl-C to stop)",
            )
    except KeyboardInterrupt:
        return


def _point(row: dict[str, Any], now: float) -> Point:
    return Point(now, row["ready"], row["unacked"], row["published"])


def _rate(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


@click.command()
@click.argument("name")
@queue_type_option("Delivery order (stack: not on RabbitMQ).")
@click.option(
    "--max-priority",
    type=int,
    help="Highest priority, 1..255 (default 10); implies --type priority.",
)
@click.option(
    "--force",
    is_flag=True,
    help="If NAME exists with another type, delete and re-create it: ITS MESSAGES ARE DROPPED.",
)
@click.option(
    "--replicated",
    is_flag=True,
    help="Keep NAME on several broker nodes (RabbitMQ: a quorum queue; fifo only).",
)
@json_option
@pass_cli
def declare(
    cli: CliContext, name: str, queue_type: str, max_priority: int | None, force: bool, replicated: bool
) -> None:
    """Declare queue NAME; declaring it again the same way is a no-op."""
    orchestrator = cli.orchestrator
    orchestrator.declare_queue(
        name, queue_type, max_priority=max_priority, force=force, replicated=replicated
    )
    spec = orchestrator.queue_spec(name)
    cli.output.result(
        {"queue": name, "type": spec.kind, "max_priority": spec.max_priority},
        f"declared {spec.describe()} queue {name!r}",
    )


def confirm(cli: CliContext, question: str, yes: bool) -> None:
    """Ask on stderr unless ``--yes``; declining exits with code 1 ("Aborted!")."""
    if not yes:
        click.confirm(f"{question} on {cli.orchestrator.client.url}?", abort=True, err=True)


@click.command()
@click.argument("queue")
@yes_option
@json_option
@pass_cli
def purge(cli: CliContext, queue: str, yes: bool) -> None:
    """Remove every ready message from QUEUE, and report how many."""
    ready = cli.orchestrator.count_queue_messages(queue)  # a missing queue fails before the prompt
    confirm(cli, f"Purge {ready} ready message(s) from {queue!r}", yes)
    removed = cli.orchestrator.clean_queue(queue)
    cli.output.result(
        {"queue": queue, "removed": removed}, f"purged {removed} message(s) from {queue!r}"
    )


@click.command()
@click.argument("queue")
@click.option("--if-empty", is_flag=True, help="Delete QUEUE only if it holds no message, ready or in flight (else exit 1).")
@yes_option
@json_option
@pass_cli
def delete(cli: CliContext, queue: str, if_empty: bool, yes: bool) -> None:
    """Delete QUEUE and its messages; QUEUE.dlq is kept."""
    ready = cli.orchestrator.count_queue_messages(queue)
    if not if_empty:
        confirm(cli, f"Delete queue {queue!r} and its {ready} ready message(s)", yes)
    cli.orchestrator.delete_queue(queue, if_empty=if_empty)
    cli.output.result(
        {"queue": queue, "deleted": True, "removed": ready},
        f"deleted queue {queue!r} ({ready} message(s) removed)",
    )


@click.command()
@click.argument("queue")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=10, show_default=True, help="How many jobs.")
@json_option
@pass_cli
def peek(cli: CliContext, queue: str, limit: int) -> None:
    """Show the next ready jobs of QUEUE in delivery order, without taking them.

    On RabbitMQ each is taken and put back at its place (it is then marked redelivered).
    """
    jobs = cli.orchestrator.peek(queue, limit)
    rows = [{"id": job.id, "name": job.name, "job_type": job.job_type.value, "attempts": job.attempts,
             "created_at": job.created_at} for job in jobs]
    if cli.output.json_mode:
        cli.output.json({"queue": queue, "jobs": rows})
        return
    cli.output.table(("id", "name", "type", "attempts", "created"), [tuple(row.values()) for row in rows],
                     title=f"Next {len(rows)} job(s) of {queue!r}")
