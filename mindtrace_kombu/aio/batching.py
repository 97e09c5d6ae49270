"""Group commit for publishes: concurrent publishes to one queue share round trips.

A publish adds ``(key, jobs, future)`` to its queue's lane and returns the future. Each queue has
at most one flush running on the offload's threads; publishes made meanwhile wait in the lane,
and the next flush takes them all (up to :data:`MAX_BATCH` jobs) and sends the jobs of one
:class:`PublishKey` with ONE ``publish_many`` call. So the round trips of ``n`` concurrent
publishes are about ``n / (publishes made during one round trip)``, not ``n``.

Order: a queue's jobs go out in the order their publish calls were made. Within a flush, jobs of
one key are sent together; a job may be sent before an earlier one of another key only when both
carry different explicit priorities (a priority queue delivers by priority first, so their order
cannot be observed); any other change of options (``None`` vs an explicit priority, ``confirm``,
an exchange) starts a new ``publish_many`` call after the previous one.

Errors: what fails a ``publish_many`` call fails the callers whose jobs were in it, each with the
same exception; a job that cannot be encoded fails only its own caller (its group is sent again
one caller at a time, since ``publish_many`` encodes everything before it sends anything).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from ..errors import JobEncodeError
from ..models import Job

__all__ = ["MAX_BATCH", "PublishCoalescer", "PublishKey"]

#: Jobs one flush takes from a lane at most (one caller's ``publish_many`` is never split).
MAX_BATCH = 1_000
#: Seconds one event-loop step may spend resuming the callers of a flush before it yields.
_RESOLVE_SLICE = 0.001

_Outcome = list[str] | Exception  # a caller's ids, or what failed its publish


class PublishKey(NamedTuple):
    """The options that make publishes shareable by one ``publish_many`` call."""

    queue: str
    priority: int | None = None
    exchange: str | None = None
    routing_key: str | None = None
    confirm: bool | None = None

    def commutes_with(self, other: PublishKey) -> bool:
        """Whether jobs of the two keys may be sent in either order: same options, different
        explicit priorities."""
        return (
            self.priority is not None and other.priority is not None and self.priority != other.priority
            and self._replace(priority=None) == other._replace(priority=None)
        )


@dataclass
class _Pending:
    key: PublishKey
    jobs: list[Job]
    future: asyncio.Future[list[str]]
    declare: bool  # submit(): declare the queue (fifo) first if it does not exist


def _groups(keys: Sequence[PublishKey]) -> list[list[int]]:
    """Indexes of ``keys`` grouped into ``publish_many`` calls, in sending order (see the module
    docstring): a key joins the latest group of the same key unless a group in between does not
    commute with it."""
    groups: list[tuple[PublishKey, list[int]]] = []
    for index, key in enumerate(keys):
        for group_key, members in reversed(groups):
            if group_key == key:
                members.append(index)
                break
            if not key.commutes_with(group_key):
                groups.append((key, [index]))
                break
        else:
            groups.append((key, [index]))
    return [members for _, members in groups]


class PublishCoalescer:
    """Coalesces concurrent publishes per queue (see the module docstring).

    Args:
        offload: runs a blocking call on a thread and awaits it.
        publish_many: ``(key, jobs) -> ids``: one blocking ``publish_many`` call.
        declare_missing: ``(queue) -> None``: declare the queue (fifo) if it does not exist, as
            ``submit`` does on first use.
    """

    def __init__(
        self,
        offload: Callable[[Callable[[], list[_Outcome]]], Awaitable[list[_Outcome]]],
        publish_many: Callable[[PublishKey, list[Job]], list[str]],
        declare_missing: Callable[[str], None],
    ) -> None:
        self._offload = offload
        self._publish_many = publish_many
        self._declare_missing = declare_missing
        self._lanes: dict[str, deque[_Pending]] = {}
        self._flushes: dict[str, asyncio.Task[None]] = {}

    def add(self, key: PublishKey, jobs: list[Job], *, declare: bool = False) -> asyncio.Future[list[str]]:
        """Queue ``jobs`` for sending with ``key``'s options; the future gets their ids. Call
        it from the event loop with validated arguments."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str]] = loop.create_future()
        self._lanes.setdefault(key.queue, deque()).append(_Pending(key, jobs, future, declare))
        if key.queue not in self._flushes:
            # an empty context: a batch carries no caller's trace context to the others
            flush = contextvars.Context().run(loop.create_task, self._flush(key.queue))
            self._flushes[key.queue] = flush
        return future

    async def drain(self) -> None:
        """Wait until every publish added so far has been sent (or has failed)."""
        while self._flushes:
            await asyncio.gather(*self._flushes.values(), return_exceptions=True)

    async def _flush(self, queue: str) -> None:
        """Send ``queue``'s lane a batch at a time until it is empty, answering each batch's
        callers (a slice of the loop's time at a time) before the next batch is taken."""
        batch: list[_Pending] = []
        try:
            while batch := self._take(queue):
                try:
                    outcomes = await self._offload(partial(self._send, queue, batch))
                except Exception as exc:  # noqa: BLE001 - the offload refused the call (closed)
                    outcomes = [exc] * len(batch)
                until = time.monotonic() + _RESOLVE_SLICE
                for pending, outcome in zip(batch, outcomes):
                    if time.monotonic() > until:
                        await asyncio.sleep(0)
                        until = time.monotonic() + _RESOLVE_SLICE
                    if pending.future.done():
                        continue  # the caller cancelled its publish meanwhile
                    if isinstance(outcome, Exception):
                        pending.future.set_exception(outcome)
                    else:
                        pending.future.set_result(outcome)
        except asyncio.CancelledError:  # the loop is shutting down: nobody will be answered
            for pending in [*batch, *self._lanes.pop(queue, ())]:
                pending.future.cancel()
            raise
        finally:
            del self._flushes[queue]

    def _take(self, queue: str) -> list[_Pending]:
        """The next batch of ``queue``'s lane: whole callers, up to MAX_BATCH jobs (at least one
        caller); publishes cancelled before their flush are not sent."""
        lane = self._lanes.get(queue)
        batch: list[_Pending] = []
        size = 0
        while lane and (not batch or size + len(lane[0].jobs) <= MAX_BATCH):
            pending = lane.popleft()
            if not pending.future.cancelled():
                batch.append(pending)
                size += len(pending.jobs)
        if not lane:
            self._lanes.pop(queue, None)
        return batch

    def _send(self, queue: str, batch: list[_Pending]) -> list[_Outcome]:
        """On a thread: send a batch, one ``publish_many`` per group; one outcome per caller."""
        outcomes: dict[int, _Outcome] = {}
        if any(pending.declare for pending in batch):
            try:
                self._declare_missing(queue)
            except Exception as exc:  # noqa: BLE001 - goes to the callers that asked for it
                outcomes = {index: exc for index, pending in enumerate(batch) if pending.declare}
        live = [index for index in range(len(batch)) if index not in outcomes]
        for group in _groups([batch[index].key for index in live]):
            self._send_group(batch, [live[member] for member in group], outcomes)
        return [outcomes[index] for index in range(len(batch))]

    def _send_group(self, batch: list[_Pending], group: list[int], outcomes: dict[int, _Outcome]) -> None:
        jobs = [job for index in group for job in batch[index].jobs]
        try:
            ids = self._publish_many(batch[group[0]].key, jobs)
        except JobEncodeError as exc:  # nothing was sent: find the caller it belongs to
            if len(group) == 1:
                outcomes[group[0]] = exc
            else:
                for index in group:
                    self._send_group(batch, [index], outcomes)
        except Exception as exc:  # noqa: BLE001 - goes to every caller of the group
            for index in group:
                outcomes[index] = exc
        else:
            start = 0
            for index in group:
                end = start + len(batch[index].jobs)
                outcomes[index] = ids[start:end]
                start = end
