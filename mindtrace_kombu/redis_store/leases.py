"""Leases: what a consumer holds stays in flight exactly as long as the consumer lives.

Each consumer (a Worker, ``claim``, a Kombu or Celery channel, the dead-letter reader) takes
messages under its own :class:`Lease`. A daemon thread renews the lease every third of
``lease_timeout`` in each queue where it holds messages, and on the way releases the expired
leases of other consumers of those queues. A consumer that dies stops renewing: its messages
return -- first in line, in their original order -- once ``lease_timeout`` has passed, by the
next heartbeat of any live consumer or the next take or count on that queue. No lock is held
across processes, so a dead process blocks nothing; a job that runs for hours under a live
consumer is never delivered twice.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Sequence

from ..errors import QueueNotFound
from .store import RedisStore, Stored, new_lease_id

__all__ = ["Lease"]

logger = logging.getLogger(__name__)


class Lease:
    """One consumer's lease on a store; thread-safe.

    Args:
        store: the store the messages come from.
    """

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.id = new_lease_id()
        self._queues: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<Lease {self.id} on {len(self._queues)} queues>"

    @property
    def interval(self) -> float:
        """Seconds between heartbeats: a third of the lease timeout."""
        return self.store.lease_timeout / 3

    def take(self, queue: str, count: int, *, acks: Sequence[str] = (), requeues: Sequence[str] = ()) -> list[Stored]:
        """:meth:`RedisStore.take` under this lease; the queue joins the heartbeat."""
        self._hold(queue)
        return self.store.take(queue, self.id, count, acks=acks, requeues=requeues)

    def settle(self, queue: str, *, acks: Sequence[str] = (), requeues: Sequence[str] = ()) -> None:
        """Acknowledge or requeue messages this lease holds in ``queue``."""
        if acks or requeues:
            self.store.take(queue, self.id, 0, acks=acks, requeues=requeues)

    def release(self, queue: str) -> int:
        """Give back everything held in ``queue`` (first in line, original order)."""
        with self._lock:
            self._queues.discard(queue)
        return self.store.release(queue, self.id)

    def close(self) -> None:
        """Stop the heartbeat and give back everything still held."""
        self._stopped.set()
        with self._lock:
            queues, self._queues = self._queues, set()
        for queue in queues:
            self.store.release(queue, self.id)

    def _hold(self, queue: str) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its own lease and heartbeat
                self.id, self._queues, self._thread, self._pid = new_lease_id(), set(), None, os.getpid()
            self._queues.add(queue)
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._heartbeat, name=f"mindtrace-lease-{self.id[:8]}", daemon=True)
                self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stopped.wait(self.interval):
            with self._lock:
                queues = sorted(self._queues)
            for queue in queues:
                try:
                    self.store.take(queue, self.id, 0)
                except QueueNotFound:
                    with self._lock:
                        self._queues.discard(queue)
                except Exception:  # noqa: BLE001 - Redis away: the next beat retries, the lease may lapse
                    logger.warning("lease %s: heartbeat on %r failed", self.id, queue, exc_info=True)
