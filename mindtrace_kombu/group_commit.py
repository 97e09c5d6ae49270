"""Group commit: concurrent sends to one destination share one broker call.

A thread that sends while another thread's send to the same key is in progress does not open a
call of its own: it queues its items and waits. When the call in progress returns, the first
waiting thread sends everything queued by then in one call, for every waiter. So ``n`` threads
publishing to one queue make about ``n / (publishes arriving during one round trip)`` calls --
on RabbitMQ one wait for the confirms of all of them, on Redis one script call -- instead of
``n``; a thread alone pays nothing but a lock. Each thread's own sends keep their order (it waits
for each), and every caller gets the outcome of the call that carried its items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

_T = TypeVar("_T")


class _Waiter(Generic[_T]):
    __slots__ = ("items", "done", "lead", "error")

    def __init__(self, items: Sequence[_T]) -> None:
        self.items = items
        self.done = threading.Event()
        self.lead = False  # woken to send the next group rather than because its items went out
        self.error: BaseException | None = None


class GroupCommit(Generic[_T]):
    """Runs ``send(key, items)`` for concurrent callers of one key, one call per group."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[Hashable, list[_Waiter[_T]]] = {}  # keys with a call in progress

    def waiting(self, key: Hashable) -> int:
        """Callers queued behind the call in progress for ``key``."""
        with self._lock:
            return len(self._queued.get(key, ()))

    def send(self, key: Hashable, items: Sequence[_T], send: Callable[[Sequence[_T]], None]) -> None:
        """Send ``items`` through ``send``, together with whatever other threads queue for
        ``key`` meanwhile; raises what the call that carried them raised."""
        waiter: _Waiter[_T] = _Waiter(items)
        with self._lock:
            queued = self._queued.get(key)
            if queued is None:
                self._queued[key] = []
                group = [waiter]
            else:
                queued.append(waiter)
                group = []
        if not group:
            waiter.done.wait()
            if not waiter.lead:
                if waiter.error is not None:
                    raise waiter.error
                return
            with self._lock:  # woken to lead: take everything queued by now, itself first
                group, self._queued[key] = self._queued[key], []
        self._send_group(key, group, send)
        if waiter.error is not None:
            raise waiter.error

    def _send_group(self, key: Hashable, group: list[_Waiter[_T]], send: Callable[[Sequence[_T]], None]) -> None:
        error: BaseException | None = None
        try:
            send([item for member in group for item in member.items])
        except BaseException as exc:  # every caller of the group gets it, the leader included
            error = exc
        with self._lock:
            queued = self._queued[key]
            if queued:
                queued[0].lead = True
                leader: _Waiter[_T] | None = queued[0]
            else:
                del self._queued[key]
                leader = None
        for member in group:
            member.error = error
            member.done.set()
        if leader is not None:
            leader.done.set()
