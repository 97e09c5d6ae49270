"""``queues``, ``declare``, ``purge`` and ``delete``: inspecting and managing queues."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..errors import QueueNotFound
from ..models import BackendType
from ..queues import QueueSpec, dead_letter_queue_name
from .context import CliContext, json_option, pass_cli, queue_type_option

__all__ = ["confirm", "declare", "delete", "purge", "queues", "yes_option"]

yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")


def _count(cli: CliContext, name: str) -> int | None:
    """Ready messages, or None when the queue was deleted since it was listed."""
    try:
        return cli.orchestrator.count_queue_messages(name)
    except QueueNotFound:
        return None


def _rows(cli: CliContext, specs: Sequence[QueueSpec]) -> list[dict[str, Any]]:
    """One row per queue; ``<name>.dlq`` folds into its queue's dead-letter count."""
    dead_letter_queues = {dead_letter_queue_name(spec.name) for spec in specs}
    unacked = cli.orchestrator.unacked_counts()
    rows = []
    for spec in specs:
        ready = None if spec.name in dead_letter_queues else _count(cli, spec.name)
        if ready is None:
            continue
        dlq = dead_letter_queue_name(spec.name)
        has_dlq = any(other.name == dlq for other in specs)
        rows.append(
            {
                "name": spec.name,
                "type": spec.kind,
                "max_priority": spec.max_priority,
                "ready": ready,
                "unacked": None if unacked is None else unacked.get(spec.name, 0),
                "dead_letters": _count(cli, dlq) if has_dlq else None,
            }
        )
    return rows


@click.command()
@click.option(
    "--queue",
    "-q",
    "names",
    multiple=True,
    metavar="NAME",
    help="Also show this queue (needed on RabbitMQ without the management API). Repeatable.",
)
@json_option
@pass_cli
def queues(cli: CliContext, names: Sequence[str]) -> None:
    """List queues: type, max priority, ready, unacknowledged (in flight), dead letters.

    \b
    Which queues are listed:
      redis, memory   every queue declared through mindtrace-kombu on the broker
      rabbitmq        with the management plugin, every queue; without it (AMQP cannot
                      list queues) the routed queues (default_jobs, ...) and --queue names
    Dead letters is the ready count of NAME.dlq when it exists. Unacked (delivered to a
    worker, not yet acknowledged) is shown where the broker reports it: Redis, and RabbitMQ
    with the management plugin (AMQP itself reports ready messages only).
    """
    orchestrator = cli.orchestrator
    for name in names:
        orchestrator.queue_spec(name)  # QueueNotFound for a name that does not exist
    rows = _rows(cli, orchestrator.list_queues())
    output = cli.output
    if output.json_mode:
        output.json({"broker": orchestrator.client.url, "queues": rows})
        return
    headers = ("queue", "type", "max priority", "ready", "unacked", "dead letters")
    output.table(
        headers, [tuple(row.values()) for row in rows], title=f"Queues on {orchestrator.client.url}"
    )
    if orchestrator.client.backend is BackendType.RABBITMQ:
        output.note(
            "note: without RabbitMQ's management plugin, only routed queues and --queue names "
            "are listed"
        )
    elif orchestrator.client.backend is BackendType.LOCAL:
        output.note(
            "note: memory:// queues live inside one process; this command started an empty broker"
        )


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
@yes_option
@json_option
@pass_cli
def delete(cli: CliContext, queue: str, yes: bool) -> None:
    """Delete QUEUE and its messages; QUEUE.dlq is kept."""
    ready = cli.orchestrator.count_queue_messages(queue)
    confirm(cli, f"Delete queue {queue!r} and its {ready} ready message(s)", yes)
    cli.orchestrator.delete_queue(queue)
    cli.output.result(
        {"queue": queue, "deleted": True, "removed": ready},
        f"deleted queue {queue!r} ({ready} message(s) removed)",
    )
