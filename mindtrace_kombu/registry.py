"""The worker registry: every running worker announces itself through its backend while it lives.

A worker announces a :class:`WorkerInfo` at start and then every third of the registry's time to
live (on Redis the lease timeout, so a worker is listed exactly as long as its lease would hold
its jobs); an entry not renewed within the time to live is gone from :meth:`Backend.workers`. A
worker that stops cleanly removes its entry at once. RabbitMQ keeps no registry: there the
backend says so with ``UnsupportedOperation``, and consumer counts come from the broker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from .backends.base import Backend
from .errors import JobsError

__all__ = ["Registration", "WorkerInfo", "consumers_by_queue"]

logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class WorkerInfo(BaseModel):
    """One live worker, as the registry lists it."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: str = "mindtrace"  # or "celery": a Celery worker on this package's transport
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    queues: list[str] = Field(default_factory=list)
    pool: str = "threads"
    concurrency: int = 1
    in_flight: list[str] = Field(default_factory=list)  # ids of the jobs it holds
    processed: int = 0
    failed: int = 0  # dead-lettered
    retried: int = 0
    started_at: str = Field(default_factory=_now)
    heartbeat_at: str = Field(default_factory=_now)


def consumers_by_queue(workers: list[WorkerInfo]) -> dict[str, int]:
    """How many of ``workers`` consume each queue."""
    counts: dict[str, int] = {}
    for worker in workers:
        for queue in set(worker.queues):
            counts[queue] = counts.get(queue, 0) + 1
    return counts


class Registration:
    """Keeps ``info`` announced on ``backend`` from :meth:`start` to :meth:`close`.

    Args:
        backend: where the registry lives.
        info: the worker; ``snapshot()`` gives the fields that change (in flight, counts) at
            each heartbeat.
    """

    def __init__(self, backend: Backend, info: WorkerInfo, snapshot: Callable[[], dict[str, object]]) -> None:
        self.backend = backend
        self.info = info
        self.snapshot = snapshot
        self.ttl = backend.registry_ttl
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Announce now (the worker is listed when this returns), then every third of the TTL."""
        self._announce()
        self._thread = threading.Thread(target=self._beat, name=f"mindtrace-registry-{self.info.id[:8]}", daemon=True)
        self._thread.start()

    def _announce(self) -> None:
        current = self.info.model_copy(update={**self.snapshot(), "heartbeat_at": _now()})
        try:
            self.backend.announce(current.id, current.model_dump_json(), self.ttl)
        except JobsError:  # the broker is away: the next beat tries again, the entry may lapse
            logger.warning("worker %s: registry heartbeat failed", current.id, exc_info=True)

    def _beat(self) -> None:
        while not self._stopped.wait(self.ttl / 3):
            self._announce()

    def close(self) -> None:
        """Stop announcing and remove the entry (it lapses on its own if that fails)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.backend.forget_worker(self.info.id)
        except JobsError:
            logger.warning("worker %s: not removed from the registry; it lapses after %g s", self.info.id, self.ttl)
