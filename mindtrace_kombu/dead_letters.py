"""Reading and requeueing dead letters: the messages in ``<queue>.dlq``.

Both take the messages through a consumer of their own (on Redis under its own lease). What is
not acknowledged goes back when the consumer closes -- first in line, in its original order --
so listing changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .arguments import check_count
from .backends.base import Delivery
from .core import QueueOperations
from .decoding import DecodeLimits, Undecodable, decode_job
from .errors import QueueNotFound
from .models import ExecutionStatus, Job
from .queues import dead_letter_queue_name

__all__ = ["DeadLetter", "list_dead_letters", "requeue_dead_letters"]

#: Longest wait for a message the count said is there (another consumer may have taken it).
_FETCH_TIMEOUT = 2.0


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message: its bytes, why it is here, and the job if it is one."""

    body: bytes
    reason: str
    queue: str
    job: Job | None = None
    attempts: int = 0
    error: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_delivery(cls, queue: str, delivery: Delivery, limits: DecodeLimits) -> DeadLetter:
        headers = dict(delivery.headers or {})
        try:
            job: Job | None = decode_job(delivery.message, limits)
        except Undecodable:  # not a job: the raw bytes are what there is
            job = None
        return cls(
            body=delivery.message.body,
            reason=str(headers.get("x-death-reason", "")),
            queue=str(headers.get("x-original-queue", queue)),
            job=job,
            attempts=int(headers.get("x-mindtrace-attempts", job.attempts if job else 0)),
            error=job.error if job else None,
            headers=headers,
        )


@contextmanager
def _taken(orchestrator: QueueOperations, queue: str, limit: int | None) -> Iterator[list[Delivery]]:
    """Up to ``limit`` messages of ``queue``'s dead-letter queue, in flight on a consumer that
    closes (returning the unacknowledged ones) when the block ends; none if it does not exist."""
    if limit is not None:
        check_count("limit", limit, minimum=0)
    dlq = dead_letter_queue_name(queue)
    try:
        wanted = orchestrator.count_queue_messages(dlq)
    except QueueNotFound:
        wanted = 0
    if limit is not None:
        wanted = min(wanted, limit)
    if wanted == 0:
        yield []
        return
    consumer = orchestrator.backend.consumer([dlq], wanted)
    try:
        deliveries: list[Delivery] = []
        while len(deliveries) < wanted:
            found = consumer.fetch(wanted - len(deliveries), _FETCH_TIMEOUT)
            if not found:
                break  # another consumer took the rest
            deliveries += found
        yield deliveries
    finally:
        consumer.close()


def list_dead_letters(orchestrator: QueueOperations, queue: str, limit: int | None = None) -> list[DeadLetter]:
    """The dead letters of ``queue``, oldest first; they stay where they are."""
    with _taken(orchestrator, queue, limit) as deliveries:
        return [DeadLetter.from_delivery(queue, delivery, orchestrator.limits) for delivery in deliveries]


def requeue_dead_letters(orchestrator: QueueOperations, queue: str, limit: int | None = None) -> int:
    """Publish each dead-lettered job back to its original queue with a fresh attempt count,
    then acknowledge it in the dead-letter queue; returns how many were requeued.

    Raises:
        QueueNotFound: the original queue is gone (the dead letters stay where they are).
    """
    requeued = 0
    with _taken(orchestrator, queue, limit) as deliveries:
        for delivery in deliveries:
            letter = DeadLetter.from_delivery(queue, delivery, orchestrator.limits)
            if letter.job is None:
                continue  # not a job: it stays in the dead-letter queue
            job = letter.job.model_copy(
                update={"attempts": 0, "status": ExecutionStatus.QUEUED, "error": None, "started_at": None}
            )
            orchestrator.publish(letter.queue, job)
            delivery.ack()
            requeued += 1
    return requeued
