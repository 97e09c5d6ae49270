"""Reading and requeueing dead letters: the messages in ``<queue>.dlq``.

Both work on a channel of their own. Messages are taken unacknowledged; whatever is not
acknowledged goes back when that channel closes, in its original order (RabbitMQ requeues in
place; the virtual transports restore to the front in reverse), so listing changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kombu.message import Message
from kombu.serialization import prepare_accept_content

from .clients import translate_errors
from .errors import QueueNotFound
from .models import ExecutionStatus, Job
from .queues import dead_letter_queue_name
from .serialization import ACCEPT

if TYPE_CHECKING:
    from .orchestrator import Orchestrator

__all__ = ["DeadLetter", "list_dead_letters", "requeue_dead_letters"]

_ACCEPT = prepare_accept_content(ACCEPT)


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
    def from_message(cls, queue: str, message: Message) -> DeadLetter:
        headers = dict(message.headers or {})
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        try:
            decoded = message.decode()
        except Exception:  # noqa: BLE001 - not a job: the raw bytes are what there is
            decoded = None
        job = decoded if isinstance(decoded, Job) else None
        return cls(
            body=body,
            reason=str(headers.get("x-death-reason", "")),
            queue=str(headers.get("x-original-queue", queue)),
            job=job,
            attempts=int(headers.get("x-mindtrace-attempts", job.attempts if job else 0)),
            error=job.error if job else None,
            headers=headers,
        )


@contextmanager
def _unacked_messages(orchestrator: Orchestrator, queue: str, limit: int | None) -> Iterator[list[Message]]:
    """Up to ``limit`` messages of ``queue``'s dead-letter queue, unacknowledged on a channel
    that closes (returning the unacknowledged ones) when the block ends."""
    dlq = dead_letter_queue_name(queue)
    connection = orchestrator.client.connection()
    try:
        with translate_errors(orchestrator.client, dlq):
            channel = connection.channel()
            messages: list[Message] = []
            while limit is None or len(messages) < limit:
                raw = channel.basic_get(dlq, no_ack=False)
                if raw is None:
                    break
                message = channel.message_to_python(raw)
                message.accept = _ACCEPT
                messages.append(message)
            yield messages
    except QueueNotFound:
        yield []
    finally:
        connection.release()


def list_dead_letters(orchestrator: Orchestrator, queue: str, limit: int | None = None) -> list[DeadLetter]:
    """The dead letters of ``queue``, oldest first; they stay where they are."""
    with _unacked_messages(orchestrator, queue, limit) as messages:
        return [DeadLetter.from_message(queue, message) for message in messages]


def requeue_dead_letters(orchestrator: Orchestrator, queue: str, limit: int | None = None) -> int:
    """Publish each dead-lettered job back to its original queue with a fresh attempt count,
    then acknowledge it in the dead-letter queue; returns how many were requeued."""
    requeued = 0
    with _unacked_messages(orchestrator, queue, limit) as messages:
        for message in messages:
            letter = DeadLetter.from_message(queue, message)
            if letter.job is None:
                continue  # not a job: it stays in the dead-letter queue
            job = letter.job.model_copy(
                update={"attempts": 0, "status": ExecutionStatus.QUEUED, "error": None, "started_at": None}
            )
            orchestrator.publish(letter.queue, job)
            message.ack()
            requeued += 1
    return requeued
