"""The worker registry for Kombu and Celery consumers of the ``mindtrace-redis`` channel
(:mod:`mindtrace_kombu.transport.redis`): a channel that consumes is listed, as a ``celery``
worker, from its first ``basic_consume`` until it closes or its entry lapses (after
``lease_timeout``, the time its lease would hold its messages)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..registry import WorkerInfo

__all__ = ["ChannelAnnouncer"]

logger = logging.getLogger(__name__)

_LEAVE_TIMEOUT = 1.0  # seconds a closing channel waits to leave the registry


class ChannelAnnouncer:
    """Announces ``channel`` in its store's registry every third of its lease timeout."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.info = WorkerInfo(id=channel.lease.id, kind="celery", pool="kombu")
        self.acknowledged = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Announce now and keep announcing (once: later calls do nothing)."""
        if self._thread is not None:
            return
        self._announce()
        self._thread = threading.Thread(target=self._beat, name=f"mindtrace-registry-{self.info.id[:8]}", daemon=True)
        self._thread.start()

    def _snapshot(self) -> WorkerInfo:
        channel = self.channel
        delivered = list(channel.qos._delivered.copy().values())
        return self.info.model_copy(update={
            "queues": sorted(channel.active_queues),
            "concurrency": int(channel.qos.prefetch_count or 0),
            "in_flight": [str(message.headers.get("id") or message.properties.get("correlation_id") or "")
                          for message in delivered],
            "processed": self.acknowledged,
        })

    def _announce(self) -> None:
        store = self.channel.store
        try:
            store.announce(self.info.id, self._snapshot().model_dump_json(), store.lease_timeout)
        except self.channel.connection_errors:
            logger.warning("channel %s: registry heartbeat failed", self.info.id, exc_info=True)

    def _beat(self) -> None:
        while not self._stopped.wait(self.channel.store.lease_timeout / 3):
            self._announce()

    def close(self) -> None:
        """Stop announcing and leave the registry, waiting at most a second: on a half-open
        connection without ``socket_timeout`` the call would hang, and the entry lapses anyway."""
        self._stopped.set()
        if self._thread is None:
            return
        leaving = threading.Thread(target=self._leave, name=f"mindtrace-registry-leave-{self.info.id[:8]}", daemon=True)
        leaving.start()
        leaving.join(_LEAVE_TIMEOUT)

    def _leave(self) -> None:
        try:
            self.channel.store.forget_worker(self.info.id)
        except Exception:  # noqa: BLE001 - best effort: its connection may be closed under it
            logger.warning("channel %s not removed from the registry; it lapses", self.info.id, exc_info=True)
