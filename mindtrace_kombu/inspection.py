"""What operators look at, read from an orchestrator: a row per queue and the rates between two
samples. Shared by ``mindtrace-jobs queues`` (and its ``--watch``) and the dashboard.

Every value a backend cannot provide is ``None``: in-flight and publish counts on RabbitMQ
without the management API, consumers where nothing counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import QueueNotFound, UnsupportedOperation
from .queues import QueueSpec, dead_letter_queue_name

if TYPE_CHECKING:
    from .core import QueueOperations

__all__ = ["Point", "QueueRow", "queue_rows", "rates"]


@dataclass(frozen=True)
class QueueRow:
    """One queue at one moment."""

    name: str
    kind: str
    max_priority: int | None
    ready: int
    in_flight: int | None
    dead_letters: int | None  # ready messages of ``<name>.dlq``; None: it does not exist
    consumers: int | None
    published: int | None  # messages ever published to it (a counter, for rates)


@dataclass(frozen=True)
class Point:
    """One sample of a queue: when (monotonic seconds), its backlog and its publish counter."""

    time: float
    ready: int
    in_flight: int | None
    published: int | None


def _count(orchestrator: QueueOperations, name: str) -> int | None:
    """Ready messages, or None when the queue is gone (deleted since it was listed)."""
    try:
        return orchestrator.count_queue_messages(name)
    except QueueNotFound:
        return None


def _specs(orchestrator: QueueOperations, names: Sequence[str]) -> list[QueueSpec]:
    """The named queues that exist and their dead-letter queues, or every queue the broker
    lists."""
    if not names:
        return orchestrator.list_queues()
    specs = []
    for name in [*names, *map(dead_letter_queue_name, names)]:
        try:
            specs.append(orchestrator.queue_spec(name))
        except QueueNotFound:
            continue
    return specs


def _consumers(orchestrator: QueueOperations, names: Sequence[str]) -> dict[str, int] | None:
    try:
        return orchestrator.consumer_counts(names)
    except UnsupportedOperation:
        return None


def queue_rows(orchestrator: QueueOperations, names: Sequence[str] = ()) -> list[QueueRow]:
    """A row per queue (those of ``names`` that exist, or every listed one); a dead-letter queue
    folds into its queue's row. Round trips: a count per queue and per dead-letter queue, plus one each for
    in-flight, consumer and publish counts."""
    specs = _specs(orchestrator, names)
    listed = {spec.name for spec in specs}
    dead_letter_queues = {dead_letter_queue_name(name) for name in listed}
    shown = [spec for spec in specs if spec.name not in dead_letter_queues]
    names = [spec.name for spec in shown]
    unacked = orchestrator.unacked_counts()
    consumers = _consumers(orchestrator, names)
    published = orchestrator.published_counts(names)
    rows = []
    for spec in shown:
        ready = _count(orchestrator, spec.name)
        if ready is None:
            continue
        dlq = dead_letter_queue_name(spec.name)
        rows.append(QueueRow(
            name=spec.name, kind=spec.kind, max_priority=spec.max_priority, ready=ready,
            in_flight=None if unacked is None else unacked.get(spec.name, 0),
            dead_letters=_count(orchestrator, dlq) if dlq in listed else None,
            consumers=None if consumers is None else consumers.get(spec.name),
            published=None if published is None else published.get(spec.name),
        ))
    return rows


def rates(history: Sequence[Point], span: float) -> tuple[float | None, float | None]:
    """(publish rate, ack rate) per second between the last point and the newest one at least
    ``span`` seconds older (else the oldest).

    The publish rate is the growth of the publish counter; the ack rate what left the queue:
    the publish rate minus the growth of its backlog (ready + in flight), since what entered
    either left or is still there (a purge counts as acknowledged). None where a count is
    unknown, with a single point, or when the counter went back (the queue was re-created)."""
    if len(history) < 2:
        return None, None
    last = history[-1]
    first = next((point for point in reversed(history[:-1]) if last.time - point.time >= span), history[0])
    elapsed = last.time - first.time
    if last.published is None or first.published is None or last.published < first.published or elapsed <= 0:
        return None, None
    publish_rate = (last.published - first.published) / elapsed
    if last.in_flight is None or first.in_flight is None:
        return publish_rate, None
    growth = (last.ready + last.in_flight) - (first.ready + first.in_flight)
    return publish_rate, max(0.0, publish_rate - growth / elapsed)
