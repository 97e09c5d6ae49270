"""``dlq list|requeue|purge``: the dead letters of a queue (kept in ``<queue>.dlq``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..errors import QueueNotFound
from ..queues import dead_letter_queue_name
from .commands_queues import confirm, yes_option
from .context import CliContext, JobsGroup, json_option, pass_cli

if TYPE_CHECKING:
    from ..dead_letters import DeadLetter

__all__ = ["dlq"]

_limit_option = click.option(
    "--limit", "-l", type=click.IntRange(min=1), help="At most this many dead letters."
)


def _as_dict(letter: DeadLetter) -> dict[str, Any]:
    data: dict[str, Any] = {
        "job_id": letter.job.id if letter.job else None,
        "queue": letter.queue,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "error": letter.error,
        "headers": letter.headers,
        "job": letter.job.model_dump(mode="json") if letter.job else None,
    }
    if letter.job is None:
        data["body"] = letter.body.decode("utf-8", errors="replace")
    return data


@click.group(cls=JobsGroup)
def dlq() -> None:
    """List, requeue or purge the dead letters of a queue.

    Dead letters are kept in QUEUE.dlq.
    A worker dead-letters a job when its retries are spent, and any consumer dead-letters a
    message that is not a job; each keeps the reason, the attempts and the last error.
    """


@dlq.command("list")
@click.argument("queue")
@_limit_option
@json_option
@pass_cli
def list_(cli: CliContext, queue: str, limit: int | None) -> None:
    """Show the dead letters of QUEUE and why; they stay in place."""
    letters = cli.orchestrator.dead_letters(queue, limit=limit)
    output = cli.output
    if output.json_mode:
        output.json({"queue": queue, "dead_letters": [_as_dict(letter) for letter in letters]})
        return
    rows = [
        (
            letter.job.id if letter.job else "(not a job)",
            letter.job.name if letter.job else None,
            letter.attempts,
            letter.reason,
            letter.error,
        )
        for letter in letters
    ]
    output.table(
        ("job id", "name", "attempts", "reason", "error"),
        rows,
        title=f"Dead letters of {queue!r}: {len(letters)}",
    )


@dlq.command()
@click.argument("queue")
@_limit_option
@json_option
@pass_cli
def requeue(cli: CliContext, queue: str, limit: int | None) -> None:
    """Move dead letters of QUEUE back onto QUEUE, oldest first."""
    moved = cli.orchestrator.requeue_dead_letters(queue, limit=limit)
    cli.output.result(
        {"queue": queue, "requeued": moved}, f"requeued {moved} dead letter(s) to {queue!r}"
    )


@dlq.command("purge")
@click.argument("queue")
@yes_option
@json_option
@pass_cli
def purge_(cli: CliContext, queue: str, yes: bool) -> None:
    """Remove every dead letter of QUEUE, and report how many."""
    name = dead_letter_queue_name(queue)
    try:
        ready = cli.orchestrator.count_queue_messages(name)
    except QueueNotFound:  # nothing was ever dead-lettered
        cli.output.result({"queue": queue, "removed": 0}, f"{queue!r} has no dead-letter queue")
        return
    confirm(cli, f"Purge {ready} dead letter(s) of {queue!r}", yes)
    removed = cli.orchestrator.clean_queue(name)
    cli.output.result(
        {"queue": queue, "removed": removed}, f"purged {removed} dead letter(s) of {queue!r}"
    )
