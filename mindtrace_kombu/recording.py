"""The consuming side of the result store: what workers and ``claim()`` record, in batches.

* RUNNING is recorded for a whole fetched batch in one store call (:func:`record_started`),
  which also tells which jobs were cancelled: they are skipped, not run.
* Outcomes are written by one :class:`OutcomeWriter` thread per worker, in batches (a group
  commit: whatever finished while the last write was in flight goes in the next), each before
  its job is settled, so a settled job's record is never behind. Handler threads do not wait.

A store that fails is logged and counted (:class:`~.results.base.Recorder`); the jobs go on.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Callable, Sequence

from .execution import utc_now
from .models import Job
from .results.base import CANCELLED, MISSING, Outcome, Recorder, ResultStore, job_record

__all__ = ["OutcomeWriter", "record_finished", "record_started"]

logger = logging.getLogger(__name__)


def record_started(
    recorder: Recorder, queue: str, jobs: Sequence[Job], on_failure: Callable[[], None] | None = None
) -> list[bool]:
    """Record ``jobs`` (just taken from ``queue``) RUNNING; per job, whether to run it (False:
    cancelled). One store call; jobs published without a record get one (two more)."""
    if recorder.store is None or not jobs:
        return [True] * len(jobs)
    started_at = utc_now()
    ids = [job.id for job in jobs]
    found = recorder.record(lambda results: results.start(queue, ids, started_at), [1] * len(jobs), on_failure)
    missing = [job for job, attempts in zip(jobs, found) if attempts == MISSING]
    if missing:
        def create(results: ResultStore) -> None:
            results.save(queue, [job_record(job) for job in missing])
            results.start(queue, [job.id for job in missing], started_at)

        recorder.record(create, None, on_failure)
    return [attempts != CANCELLED for attempts in found]


def record_finished(
    recorder: Recorder, queue: str, outcomes: Sequence[Outcome], on_failure: Callable[[], None] | None = None
) -> None:
    """Write ``outcomes`` of ``queue``'s jobs (one store call)."""
    if outcomes:
        recorder.record(lambda results: results.finish(queue, outcomes), None, on_failure)


class OutcomeWriter:
    """Writes outcomes in batches on its own thread, then runs each one's ``then`` (the job's
    settlement), in submission order. While ``busy()`` says more jobs are running, a batch
    waits up to ``linger`` seconds to fill up to ``batch`` outcomes (fewer, larger writes);
    a lone job's outcome is written at once."""

    def __init__(
        self, recorder: Recorder, on_failure: Callable[[], None] | None = None, *,
        busy: Callable[[], bool] = lambda: False, linger: float = 0.002, batch: int = 100,
    ) -> None:
        self._recorder = recorder
        self._on_failure = on_failure
        self._busy, self._linger, self._batch = busy, linger, batch
        self._queued: list[tuple[str, Outcome, Callable[[], None]]] = []
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._write_batches, name="mindtrace-outcomes", daemon=True)
        self._thread.start()

    def submit(self, queue: str, finished: Outcome, then: Callable[[], None]) -> None:
        """Write ``finished`` with the next batch, then call ``then``."""
        with self._changed:
            self._queued.append((queue, finished, then))
            # wake the writer for a batch's first outcome and when a batch is full, not for every
            # one (each wake-up costs a thread switch; a batch waits at most ``linger`` anyway)
            if len(self._queued) in (1, self._batch):
                self._changed.notify()

    def close(self) -> None:
        """Write and settle everything submitted, then stop."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()

    def _write_batches(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queued or self._closing)
                if not self._closing and self._busy():
                    self._changed.wait_for(lambda: len(self._queued) >= self._batch or self._closing, self._linger)
                batch, self._queued = self._queued, []
                if not batch:
                    return
            by_queue: dict[str, list[Outcome]] = defaultdict(list)
            for queue, finished, _ in batch:
                by_queue[queue].append(finished)
            for queue, outcomes in by_queue.items():
                record_finished(self._recorder, queue, outcomes, self._on_failure)
            for _, finished, then in batch:
                try:
                    then()
                except Exception:  # the writer must go on: later jobs still need settling
                    logger.exception("settling job %s failed", finished.job_id)
