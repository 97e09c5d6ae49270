"""The dashboard's pages, rendered from data already read (no broker calls here)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .charts import sparkline
from .data import QueueRow
from .layout import csrf_field, href, link, number, table, text
from .sampling import QueueStats

if TYPE_CHECKING:
    from ..dead_letters import DeadLetter
    from ..models import Job
    from ..registry import WorkerInfo

__all__ = [
    "ACTIONS", "confirm_body", "dead_letters_body", "dead_letters_index_body", "job_body", "login_body",
    "message_body", "queues_body", "workers_body",
]

#: The dead-letter actions: path segment -> (button label, what it does, past tense).
ACTIONS = {
    "requeue": ("Requeue", "publish every dead-lettered job back to {queue} with a fresh attempt count", "requeued"),
    "purge": ("Purge", "delete every dead letter of {queue}; they cannot be recovered", "purged"),
}


def message_body(message: str, css_class: str = "warning") -> str:
    """A page that only says something (errors, refusals)."""
    return f'<p class="{css_class}">{text(message)}</p>'


def _chart(stats: QueueStats) -> str:
    points = stats.history
    return sparkline(
        [point.time for point in points],
        {"ready": [point.ready for point in points], "in_flight": [point.in_flight for point in points]},
        f"{stats.row.name}: ready and in flight over the last {points[-1].time - points[0].time:.0f} s",
    )


def _dead_letter_cell(row: QueueRow) -> str:
    if not row.dead_letters:
        return number(row.dead_letters)
    return f'<td class="num">{link("/dead-letters", row.dead_letters, queue=row.name)}</td>'


def queues_body(stats: Sequence[QueueStats], interval: float) -> str:
    """Per queue: counts, rates and a chart of its recent samples."""
    rows = (
        f"<td>{text(s.row.name)}</td><td>{text(s.row.kind)}</td>{number(s.row.ready)}{number(s.row.in_flight)}"
        f"{_dead_letter_cell(s.row)}{number(s.row.consumers)}{number(s.publish_rate, '/s')}"
        f"{number(s.ack_rate, '/s')}<td>{_chart(s)}</td>"
        for s in stats
    )
    headers = ("queue", "type", "ready", "in flight", "dead letters", "consumers", "publish rate", "ack rate", "recent")
    legend = (
        f'<p class="muted">Sampled every {interval:g} s; chart: <span class="legend-ready">ready</span> and '
        '<span class="legend-in_flight">in flight</span>. "-": not reported by this broker.</p>'
    )
    return table(headers, rows, "No queues.") + legend


def workers_body(workers: Sequence[WorkerInfo] | None, queues: Sequence[QueueRow]) -> str:
    """The registered workers; where there is no registry, the broker's consumer counts."""
    if workers is None:
        consumers = (f"<td>{text(row.name)}</td>{number(row.consumers)}" for row in queues)
        return message_body("Worker details are not available on RabbitMQ (it keeps no worker registry).") + (
            table(("queue", "consumers"), consumers, "No queues.")
        )
    rows = (
        f"<td>{text(w.id)}</td><td>{text(w.kind)}</td><td>{text(w.host)}</td>{number(w.pid)}"
        f"<td>{text(', '.join(w.queues))}</td><td>{text(w.pool)}</td>{number(w.concurrency)}"
        f"<td>{' '.join(link('/jobs', job_id[:8], id=job_id) for job_id in w.in_flight) or '-'}</td>"
        f"{number(w.processed)}{number(w.failed)}{number(w.retried)}"
        f"<td>{text(w.started_at)}</td><td>{text(w.heartbeat_at)}</td>"
        for w in workers
    )
    headers = ("id", "kind", "host", "pid", "queues", "pool", "concurrency", "in flight", "processed",
               "failed", "retried", "started", "last heartbeat")
    return table(headers, rows, "No worker is running.")


def _search_form(job_id: str) -> str:
    return (
        '<form method="get" action="/jobs"><label>Job id <input type="text" name="id" '
        f'value="{text(job_id)}" required></label> <button type="submit">Look up</button></form>'
    )


def job_body(job_id: str, job: Job | None, problem: str | None) -> str:
    """The search form and, for an id, the job's record (or why there is none)."""
    form = _search_form(job_id)
    if problem is not None:
        return form + message_body(problem)
    if not job_id:
        return form
    if job is None:
        return form + message_body(f"No job {job_id} in the result store.")
    output = job.payload.output
    fields = {
        "id": text(job.id), "name": text(job.name), "type": text(job.job_type.value),
        "status": f'<span class="status-{text(job.status.value)}">{text(job.status.value)}</span>',
        "attempts": text(job.attempts), "created": text(job.created_at), "started": text(job.started_at),
        "completed": text(job.completed_at), "error": text(job.error),
        "dead-lettered": "yes" if job.dead_lettered else "no",
        "input": f"<pre>{text(json.dumps(job.payload.input.model_dump(mode='json'), indent=2))}</pre>",
        "output": "-" if output is None else f"<pre>{text(json.dumps(output.model_dump(mode='json'), indent=2))}</pre>",
    }
    if job.traceback:
        fields["traceback"] = f"<pre>{text(job.traceback)}</pre>"
    details = "".join(f'<dt>{text(key)}</dt><dd class="field-{key}">{value}</dd>' for key, value in fields.items())
    return f"{form}<dl>{details}</dl>"


def dead_letters_index_body(queues: Sequence[QueueRow]) -> str:
    """Every queue with its dead-letter count, linking to its dead letters."""
    rows = (f"<td>{link('/dead-letters', row.name, queue=row.name)}</td>{number(row.dead_letters)}" for row in queues)
    return table(("queue", "dead letters"), rows, "No queues.")


def dead_letters_body(queue: str, letters: Sequence[DeadLetter], read_only: bool, notice: str | None) -> str:
    """A queue's dead letters with their reasons, and the actions (unless read-only)."""
    rows = (
        f"<td>{link('/jobs', letter.job.id, id=letter.job.id) if letter.job else '(not a job)'}</td>"
        f"<td>{text(letter.job.name if letter.job else None)}</td>{number(letter.attempts)}"
        f'<td class="reason">{text(letter.reason)}</td><td>{text(letter.error)}</td>'
        for letter in letters
    )
    body = message_body(notice, "notice") if notice else ""
    body += table(("job id", "name", "attempts", "reason", "error"), rows, f"{queue} has no dead letters.")
    if letters and not read_only:
        body += "<p>" + " ".join(
            f'<a class="button{" danger" if action == "purge" else ""}" '
            f'href="{text(href("/dead-letters/confirm", queue=queue, action=action))}">{label}&hellip;</a>'
            for action, (label, _, _) in ACTIONS.items()
        ) + "</p>"
    return body


def confirm_body(queue: str, action: str, count: int, csrf_token: str) -> str:
    """The confirmation step of an action: what it will do, a POST form, and a way back."""
    label, effect, _ = ACTIONS[action]
    return (
        f"<p>This will {text(effect.format(queue=queue))} ({count} dead letter(s) now).</p>"
        f'<form method="post" action="/dead-letters/{action}">{csrf_field(csrf_token)}'
        f'<input type="hidden" name="queue" value="{text(queue)}">'
        f'<button type="submit" class="{"danger" if action == "purge" else ""}">{label} {count} dead letter(s)</button> '
        f"{link('/dead-letters', 'Cancel', queue=queue)}</form>"
    )


def login_body(csrf_token: str, failed: bool) -> str:
    """The token form; it sets an HttpOnly session cookie."""
    warning = message_body("That token is not valid.") if failed else ""
    return warning + (
        f'<form method="post" action="/login">{csrf_field(csrf_token)}<label>Token '
        '<input type="password" name="token" autocomplete="current-password" required></label> '
        '<button type="submit">Sign in</button></form>'
    )
