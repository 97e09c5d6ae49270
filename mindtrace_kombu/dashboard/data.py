"""What the pages show, read from an orchestrator: the queue rows of :mod:`..inspection`, and
the workers. Every value a backend cannot provide is ``None`` (shown as "-")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UnsupportedOperation
from ..inspection import QueueRow, queue_rows

if TYPE_CHECKING:
    from ..orchestrator import Orchestrator
    from ..registry import WorkerInfo

__all__ = ["QueueRow", "queue_rows", "workers_or_none"]


def workers_or_none(orchestrator: Orchestrator) -> list[WorkerInfo] | None:
    """The registered workers, or None where the backend keeps no registry (RabbitMQ)."""
    try:
        return orchestrator.workers()
    except UnsupportedOperation:
        return None
