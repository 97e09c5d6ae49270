"""Successive samples of every queue, kept for the last minutes, and the rates between them
(:func:`..inspection.rates`, from two samples at least ``interval`` apart).

A :class:`Sampler` samples on a thread of its own every ``interval`` seconds, and whenever the
queues page is loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import JobsError
from ..inspection import Point, QueueRow, queue_rows, rates

if TYPE_CHECKING:
    from ..orchestrator import Orchestrator

__all__ = ["Point", "QueueStats", "Sampler", "rates"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueStats:
    """A queue's latest row, its rates (None: unknown) and its recent points, oldest first."""

    row: QueueRow
    publish_rate: float | None
    ack_rate: float | None
    history: tuple[Point, ...]


class Sampler:
    """Samples ``orchestrator``'s queues every ``interval`` seconds, keeping ``window`` seconds."""

    def __init__(self, orchestrator: Orchestrator, *, interval: float = 5.0, window: float = 600.0) -> None:
        self.orchestrator = orchestrator
        self.interval = interval
        self.window = window
        self._lock = threading.Lock()
        self._history: dict[str, deque[Point]] = {}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Sample in the background until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="mindtrace-dashboard-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.sample()
            except JobsError:  # the broker is away: the next sample tries again
                logger.warning("dashboard: sampling failed", exc_info=True)

    def sample(self) -> list[QueueStats]:
        """Sample every queue now; returns each queue's stats."""
        with self._lock:
            rows = queue_rows(self.orchestrator)
            now = time.monotonic()
            for name in set(self._history) - {row.name for row in rows}:
                del self._history[name]  # deleted queues
            return [self._record(row, now) for row in rows]

    def _record(self, row: QueueRow, now: float) -> QueueStats:
        history = self._history.setdefault(row.name, deque())
        history.append(Point(now, row.ready, row.in_flight, row.published))
        while now - history[0].time > self.window:
            history.popleft()
        points = tuple(history)
        publish_rate, ack_rate = rates(points, self.interval)
        return QueueStats(row, publish_rate, ack_rate, points)
