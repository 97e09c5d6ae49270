"""Workers: at-least-once consumption with acknowledgements, retries and dead letters.

A :class:`Worker` consumes one or more queues through the backend's consumer (push-based or
blocking, with a prefetch limit) and runs a handler for each job. What happens to a message:

* the handler returns -> the message is acknowledged (the job is done);
* the handler raises and retries are left -> after an exponential backoff with jitter a copy
  with ``attempts + 1`` is published to the same queue, then the original is acknowledged;
* the handler raises and retries are spent -> the job (status FAILED, its error, traceback
  summary and attempt count) is published to ``<queue>.dlq``, then the original is acknowledged;
* the message is not a job -> it is moved, unchanged, to ``<queue>.dlq`` with the reason;
* the worker dies -> nothing was acknowledged, so the broker delivers the message again
  (RabbitMQ at once, Redis when the worker's lease expires: ``lease_timeout``, default 30 s).

Publishing always happens before the acknowledgement, so a crash between the two duplicates a
job and never loses one.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel

from .backends.base import Consumer, Delivery
from .core import OutgoingMessage, QueueOperations
from .errors import BrokerUnavailable, JobDecodeError, QueueNotFound
from .models import ExecutionStatus, Job, JobOutput
from .queues import QueueType

__all__ = ["MAX_MESSAGE_BYTES", "Handler", "JobEvent", "RetryPolicy", "Worker", "WorkerStats", "claim"]

logger = logging.getLogger(__name__)

Handler = Callable[[Job], Any]

_IDLE_FETCH = 1.0  # seconds a fetch waits for a message before the loop checks for stop()
_BURST_FETCH = 0.1  # ... in run(until_empty=True), before checking whether the queues are empty
_RECONNECT_ATTEMPTS = 10
#: Bodies larger than this are not decoded but dead-lettered (Worker(max_message_bytes=...)).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failed job is tried again."""

    max_retries: int = 3
    backoff: float = 0.5
    backoff_max: float = 30.0
    jitter: bool = True

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential, capped, with full jitter
        over its upper half."""
        delay = min(self.backoff * 2 ** max(attempt - 1, 0), self.backoff_max)
        return random.uniform(delay / 2, delay) if self.jitter else delay

    def retries_for(self, job: Job) -> int:
        """The job's own ``max_retries`` wins over the policy's."""
        return self.max_retries if job.max_retries is None else job.max_retries


@dataclass(frozen=True)
class JobEvent:
    """What happened to one delivered job (for logs and progress)."""

    job_id: str
    queue: str
    duration: float
    outcome: str  # "completed" | "retried" | "dead-lettered"
    attempts: int = 0
    error: str | None = None
    job: Job | None = None


@dataclass
class WorkerStats:
    """Counters of one :meth:`Worker.run`."""

    processed: int = 0
    completed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def count(self, outcome: str) -> None:
        self.processed += 1
        if outcome == "completed":
            self.completed += 1
        elif outcome == "retried":
            self.retried += 1
        else:
            self.dead_lettered += 1


@dataclass
class _Result:
    """A handler's run: the job with its lifecycle fields filled in, and the error if it raised."""

    job: Job
    duration: float
    error: BaseException | None = None

    @property
    def error_text(self) -> str | None:
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def traceback_summary(self, limit: int = 5) -> str:
        assert self.error is not None
        lines = traceback.format_exception(type(self.error), self.error, self.error.__traceback__, limit=-limit)
        return "".join(lines)[-4000:]


def _started(job: Job) -> float:
    """Mark ``job`` RUNNING as one more attempt; returns the monotonic start time."""
    job.status, job.started_at, job.attempts = ExecutionStatus.RUNNING, _now(), job.attempts + 1
    return time.monotonic()


def _failed(job: Job, started: float, error: Exception) -> _Result:
    job.status, job.error = ExecutionStatus.FAILED, f"{type(error).__name__}: {error}"
    return _Result(job, time.monotonic() - started, error)


def _completed(job: Job, started: float, output: object = None) -> _Result:
    job.status, job.completed_at, job.error = ExecutionStatus.COMPLETED, _now(), None
    if isinstance(output, JobOutput):
        job.payload.output = output
    elif isinstance(output, BaseModel):
        job.payload.output = JobOutput.model_validate(output.model_dump())
    return _Result(job, time.monotonic() - started)


def _execute(handler: Handler, job: Job) -> _Result:
    """Run ``handler`` on ``job``: RUNNING, then COMPLETED (with its output) or FAILED."""
    started = _started(job)
    try:
        output = handler(job)
    except Exception as exc:  # noqa: BLE001 - any handler failure is retried or dead-lettered
        return _failed(job, started, exc)
    return _completed(job, started, output)


def _decode(orchestrator: QueueOperations, delivery: Delivery, max_bytes: int = MAX_MESSAGE_BYTES) -> Job:
    """The job in ``delivery``; anything else is dead-lettered, acknowledged, and raises."""
    try:
        return orchestrator.decode_job(delivery, max_bytes=max_bytes)
    except JobDecodeError:
        delivery.ack()  # the message is safe in the dead-letter queue
        raise


def _requeue_copy(orchestrator: QueueOperations, delivery: Delivery, job: Job) -> None:
    """Publish the failed job back to its queue for another attempt, then ack the original."""
    retry = job.model_copy(update={"status": ExecutionStatus.QUEUED, "started_at": None})
    spec = orchestrator.queue_spec(delivery.queue)
    priority = delivery.priority if spec.queue_type is QueueType.PRIORITY else None
    orchestrator.publish(delivery.queue, retry, priority=priority)
    delivery.ack()


def _bury(orchestrator: QueueOperations, delivery: Delivery, result: _Result) -> None:
    """Dead-letter a job whose retries are spent, then ack the original."""
    job = result.job
    reason = f"failed after {job.attempts} attempts: {result.error_text}"
    headers = {"x-mindtrace-attempts": job.attempts, "x-mindtrace-traceback": result.traceback_summary()}
    orchestrator.dead_letter(delivery.queue, OutgoingMessage(job, {"headers": headers}), reason)
    delivery.ack()


def _settle_failure(orchestrator: QueueOperations, delivery: Delivery, result: _Result, policy: RetryPolicy) -> str:
    """Retry now or dead-letter; returns the outcome."""
    if result.job.attempts <= policy.retries_for(result.job):
        _requeue_copy(orchestrator, delivery, result.job)
        return "retried"
    _bury(orchestrator, delivery, result)
    return "dead-lettered"


@contextmanager
def claim(
    orchestrator: QueueOperations, queue: str, *, timeout: float | None = None, policy: RetryPolicy = RetryPolicy()
) -> Iterator[Job | None]:
    """Take one job; acknowledge it when the block exits normally, retry or dead-letter it when
    the block raises (the exception propagates). Yields None if no job came within ``timeout``.

    Raises:
        QueueNotFound, JobDecodeError (the message was dead-lettered), BrokerUnavailable.
    """
    delivery = orchestrator.take(queue, timeout, ack=True)
    if delivery is None:
        yield None
        return
    job = _decode(orchestrator, delivery)
    started = _started(job)
    try:
        yield job
    except Exception as exc:
        _settle_failure(orchestrator, delivery, _failed(job, started, exc), policy)
        raise
    _completed(job, started)
    delivery.ack()


class Worker:
    """Consume queues and run ``handler`` for every job, at least once.

    Args:
        orchestrator: where the queues live (and where retries and dead letters are published).
        queues: queue name(s) to consume; they must exist.
        handler: ``(job) -> result``; a returned ``JobOutput`` is stored on ``job.payload.output``.
        concurrency: handler threads; 1 runs handlers on the consuming thread.
        prefetch: messages taken ahead of acknowledgements (default: concurrency).
        max_retries, retry_backoff, retry_backoff_max: the :class:`RetryPolicy`
            (a job's own ``max_retries`` wins).
        on_event: called with a :class:`JobEvent` per settled job, on the thread that ran it.
        max_message_bytes: larger messages are dead-lettered undecoded.
    """

    def __init__(
        self,
        orchestrator: QueueOperations,
        queues: str | Sequence[str],
        handler: Handler,
        *,
        concurrency: int = 1,
        prefetch: int | None = None,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 30.0,
        on_event: Callable[[JobEvent], None] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.orchestrator = orchestrator
        self.queues = [queues] if isinstance(queues, str) else list(queues)
        self.handler = handler
        self.concurrency = concurrency
        self.prefetch = prefetch or concurrency
        self.policy = RetryPolicy(max_retries, retry_backoff, retry_backoff_max)
        self.on_event = on_event
        self.max_message_bytes = max_message_bytes
        self.stats = WorkerStats()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: dict[Future[None], Delivery] = {}
        self._delayed: dict[Delivery, tuple[threading.Timer, Job]] = {}
        self._releasing = 0  # retries being published
        self._consumer: Consumer | None = None
        self._consuming = False  # the current connection got as far as consuming

    def stop(self) -> None:
        """Ask :meth:`run` to finish: in-flight jobs complete and are acknowledged, prefetched
        ones go back to the queue. Safe from signal handlers and other threads; a stop before
        :meth:`run` makes it return at once."""
        self._stopping.set()

    def run(self, until_empty: bool = False) -> WorkerStats:
        """Consume until :meth:`stop` (or SIGINT/SIGTERM in the main thread); with
        ``until_empty`` also return once the queues are empty and nothing is in flight.

        A lost broker connection is re-established (bounded retries, then
        :class:`BrokerUnavailable`); messages of the lost connection are delivered again.
        """
        for queue in self.queues:
            self.orchestrator.queue_spec(queue)  # QueueNotFound before consuming anything
        self.stats = WorkerStats()
        if self.concurrency > 1:
            self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="mindtrace-worker")
        with self._signals_stop():
            failures = 0
            while not self._stopping.is_set():
                try:
                    self._consume(until_empty)
                    break
                except BrokerUnavailable:
                    failures = 1 if self._consuming else failures + 1  # a fresh drop, or still down
                    if failures >= _RECONNECT_ATTEMPTS:
                        raise
                    logger.warning("broker connection lost; reconnecting (attempt %d)", failures)
                    time.sleep(min(0.2 * 2**failures, 2.0))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._stopping.clear()  # a stop() before run() still counts; after it, run() can start again
        return self.stats

    @contextmanager
    def _signals_stop(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda *_: self.stop())
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _consume(self, until_empty: bool) -> None:
        """One consumer's life, until the run is over; a broken connection raises
        :class:`BrokerUnavailable` (``_consuming`` tells whether it had worked)."""
        self._consuming = False
        consumer = self._consumer = self.orchestrator.backend.consumer(self.queues, self.prefetch)
        try:
            while not self._stopping.is_set():
                deliveries = consumer.fetch(self.prefetch, _BURST_FETCH if until_empty else _IDLE_FETCH)
                self._consuming = True
                for delivery in deliveries:
                    self._dispatch(delivery)
                if until_empty and not deliveries and self._drained():
                    return
        except BrokerUnavailable:
            self._abandon()
            raise
        finally:
            self._shut_down(consumer)

    def _drained(self) -> bool:
        with self._lock:
            busy = bool(self._pending or self._delayed or self._releasing)
        return not busy and all(self._ready(queue) == 0 for queue in self.queues)

    def _ready(self, queue: str) -> int:
        try:
            return self.orchestrator.count_queue_messages(queue)
        except QueueNotFound:
            return 0  # deleted while consumed: nothing left in it

    # -- per message -----------------------------------------------------------------------------

    def _dispatch(self, delivery: Delivery) -> None:
        if self._stopping.is_set():
            delivery.reject(requeue=True)  # taken while stopping: back first in line
            return
        try:
            job = _decode(self.orchestrator, delivery, self.max_message_bytes)
        except JobDecodeError as exc:
            logger.warning("%s", exc)  # dead-lettered and acknowledged by _decode
            self._emit(JobEvent("-", delivery.queue, 0.0, "dead-lettered", error=exc.reason))
            return
        if self._executor is None:
            self._run_job(delivery, job)
            return
        with self._lock:
            future = self._executor.submit(self._run_job, delivery, job)
            self._pending[future] = delivery
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.pop(future, None)

    def _run_job(self, delivery: Delivery, job: Job) -> None:
        """Run the handler and settle the job, on the thread that ran it."""
        result = _execute(self.handler, job)
        try:
            outcome = self._settle(delivery, result)
        except Exception:  # noqa: BLE001 - the broker failed: the job stays in flight and comes back
            logger.warning("job %s on %s: could not settle; it will be delivered again", job.id, delivery.queue, exc_info=True)
            return
        logger.info("job %s on %s: %s in %.3fs (attempt %d)", job.id, delivery.queue, outcome, result.duration, job.attempts)
        self._emit(JobEvent(job.id, delivery.queue, result.duration, outcome, job.attempts, result.error_text, job))

    def _settle(self, delivery: Delivery, result: _Result) -> str:
        job = result.job
        if result.error is None:
            delivery.ack()  # done: the job leaves the broker
            return "completed"
        if job.attempts <= self.policy.retries_for(job):
            # kept in flight (safe on the broker) until the backoff passes; prefetch grows by one
            # meanwhile so other jobs keep flowing
            timer = threading.Timer(self.policy.delay(job.attempts), self._retry, (delivery,))
            timer.daemon = True
            with self._lock:
                self._delayed[delivery] = (timer, job)
                self._set_prefetch()
            timer.start()
            return "retried"
        _bury(self.orchestrator, delivery, result)
        return "dead-lettered"

    def _retry(self, delivery: Delivery) -> None:
        """The backoff passed: publish the copy, then ack the original."""
        with self._lock:
            held = self._delayed.pop(delivery, None)
            if held is None:
                return  # already released by shutdown, or dropped with a broken connection
            self._releasing += 1  # still in hand: run(until_empty=True) must not end meanwhile
        try:
            _requeue_copy(self.orchestrator, delivery, held[1])
        except Exception:  # noqa: BLE001 - the original stays in flight and comes back
            logger.warning("job %s on %s: retry not published; it will be delivered again", held[1].id, delivery.queue, exc_info=True)
        finally:
            with self._lock:
                self._releasing -= 1
                self._set_prefetch()

    def _set_prefetch(self) -> None:
        if self._consumer is not None:
            self._consumer.set_prefetch(self.prefetch + len(self._delayed))

    def _emit(self, event: JobEvent) -> None:
        with self._lock:
            self.stats.count(event.outcome)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # noqa: BLE001 - a failing observer must not stop the worker
                logger.exception("on_event failed for job %s on %s", event.job_id, event.queue)

    # -- shutdown ----------------------------------------------------------------------------------

    def _shut_down(self, consumer: Consumer) -> None:
        """Finish in-flight jobs and publish held retries, then close: what was taken and not
        started goes back to the front of its queue."""
        try:
            with self._lock:
                pending = list(self._pending.items())
            for future, delivery in pending:
                if future.cancel():  # never started
                    delivery.reject(requeue=True)
            for future, _ in pending:
                if not future.cancelled():
                    future.exception()  # wait for the handler to finish and settle
            with self._lock:
                delayed = list(self._delayed.items())
            for delivery, (timer, _) in delayed:
                timer.cancel()
                self._retry(delivery)  # publishes now, unless the timer just did
            consumer.close()
        except Exception:  # noqa: BLE001
            logger.warning("could not settle in-flight jobs; the broker will deliver them again", exc_info=True)
            self._abandon()
        finally:
            self._consumer = None

    def _abandon(self) -> None:
        """Forget the messages of a broken connection: their settlements cannot be sent, the
        broker delivers them again."""
        with self._lock:
            pending, self._pending = list(self._pending), {}
            delayed, self._delayed = list(self._delayed.values()), {}
        for future in pending:
            future.cancel()
        for timer, _ in delayed:
            timer.cancel()
