"""Workers: at-least-once consumption with acknowledgements, retries and dead letters.

A :class:`Worker` consumes one or more queues through the backend's consumer (push-based or
blocking, with a prefetch limit) and runs a handler for each job. What happens to a message:

* the handler returns -> the message is acknowledged (the job is done);
* the handler raises (or runs past ``time_limit``) and retries are left -> after an exponential
  backoff with jitter a copy with ``attempts + 1`` is published to the same queue, then the
  original is acknowledged;
* the handler raises and retries are spent -> the job (status FAILED, its error, traceback
  summary and attempt count) is published to ``<queue>.dlq``, then the original is acknowledged;
* the message is not a job -> it is moved, unchanged, to ``<queue>.dlq`` with the reason;
* the worker dies -> nothing was acknowledged, so the broker delivers the message again
  (RabbitMQ at once, Redis when the worker's lease expires: ``lease_timeout``, default 30 s).

Publishing always happens before the acknowledgement, so a crash between the two duplicates a
job and never loses one.

Handlers run on daemon threads (``pool="threads"``) or in child processes
(``pool="processes"``, :mod:`.process_pool`); the consuming thread only takes, decodes and
dispatches, and each handler thread settles its own job, so in both pools acknowledgements,
retries and dead letters are sent from this process, on its broker connection.

Shutdown: the first SIGINT/SIGTERM (or :meth:`Worker.stop`) is warm -- no new job starts,
prefetched jobs go back to the queue first in line, jobs in progress get ``shutdown_grace``
seconds to finish. The second signal (or ``stop(cold=True)``, or the grace running out) is cold:
the jobs still in progress go back to the queue, child processes are killed, :meth:`Worker.run`
returns.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import Literal

from . import tracing
from .arguments import check_count, check_seconds, check_time_limit, check_timeout
from .backends.base import Consumer, Delivery
from .core import OutgoingMessage, QueueOperations
from .errors import BrokerUnavailable, InvalidArgument, JobDecodeError, QueueNotFound
from .execution import (
    Handler,
    Result,
    complete,
    describe,
    fail,
    run_handler,
    run_with_soft_limit,
    start,
)
from .models import ExecutionStatus, Job
from .process_pool import ProcessPool
from .queues import QueueType
from .recording import OutcomeWriter, record_finished, record_started
from .registry import Registration, WorkerInfo
from .results.base import Outcome
from .thread_pool import DaemonThreadPool, Task

__all__ = [
    "SHUTDOWN_GRACE",
    "Handler",
    "JobEvent",
    "Pool",
    "RetryPolicy",
    "Worker",
    "WorkerStats",
    "claim",
]

logger = logging.getLogger(__name__)

#: Where handlers run: threads of the worker's process, or child processes (CPU-bound handlers).
Pool = Literal["threads", "processes"]
POOLS: tuple[Pool, ...] = ("threads", "processes")

_ANNOUNCE_AFTER = 0.5  # seconds a warm shutdown waits before it says which jobs it waits for
_IDLE_FETCH = 1.0  # seconds a fetch waits for a message before the loop checks for stop()
_BURST_FETCH = 0.1  # ... in run(until_empty=True), before checking whether the queues are empty
_RECONNECT_ATTEMPTS = 10
_QUEUE_WAIT_FIRST = 0.1  # seconds between looks for a missing queue: doubling up to ...
_QUEUE_WAIT_MAX = 5.0
#: Seconds a warm shutdown waits for jobs in progress before it turns cold (Worker(shutdown_grace=...)).
SHUTDOWN_GRACE = 30.0
#: Default prefetch per unit of concurrency, as Celery's ``worker_prefetch_multiplier``: a fetch
#: (one round trip on Redis) brings several jobs, and their records go in one call.
PREFETCH_MULTIPLIER = 4


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late a failed job is tried again.

    Raises:
        InvalidArgument: ``max_retries`` below 0, a backoff that is not a finite number >= 0.
    """

    max_retries: int = 3
    backoff: float = 0.5
    backoff_max: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        check_count("max_retries", self.max_retries, minimum=0)
        check_seconds("retry_backoff", self.backoff)
        check_seconds("retry_backoff_max", self.backoff_max)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential, capped, with full jitter
        over its upper half."""
        delay = min(self.backoff * 2 ** max(attempt - 1, 0), self.backoff_max)
        return random.uniform(delay / 2, delay) if self.jitter else delay

    def retries_for(self, job: Job) -> int:
        """The job's own ``max_retries`` wins over the policy's."""
        return self.max_retries if job.max_retries is None else job.max_retries

    def retries(self, job: Job) -> bool:
        """Whether a failed attempt of ``job`` is tried again (else it is dead-lettered)."""
        return job.attempts <= self.retries_for(job)


@dataclass(frozen=True)
class JobEvent:
    """What happened to one delivered job (for logs and progress)."""

    job_id: str
    queue: str
    duration: float
    outcome: str  # "completed" | "retried" | "dead-lettered" | "cancelled"
    attempts: int = 0
    error: str | None = None
    job: Job | None = None


@dataclass
class WorkerStats:
    """Counters of one :meth:`Worker.run`; ``returned`` counts jobs given back to their queue
    unfinished by a shutdown (prefetched ones, and those in progress at a cold shutdown)."""

    processed: int = 0
    completed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    returned: int = 0
    cancelled: int = 0  # skipped: cancelled before they started
    record_failures: int = 0  # job records the result store could not take (the jobs went on)
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def count(self, outcome: str) -> None:
        self.processed += 1
        if outcome == "completed":
            self.completed += 1
        elif outcome == "cancelled":
            self.cancelled += 1
        elif outcome == "retried":
            self.retried += 1
        else:
            self.dead_lettered += 1


def _decode(orchestrator: QueueOperations, delivery: Delivery, max_bytes: int | None = None) -> Job:
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
    with tracing.resumed(delivery.headers):  # the copy stays in the job's trace
        orchestrator.publish(delivery.queue, retry, priority=priority)
    delivery.ack()


def _bury(orchestrator: QueueOperations, delivery: Delivery, result: Result) -> None:
    """Dead-letter a job whose retries are spent, then ack the original."""
    job = result.job
    reason = f"failed after {job.attempts} attempts: {result.error}"
    headers = {**tracing.carried(delivery.headers), "x-mindtrace-attempts": job.attempts, "x-mindtrace-traceback": result.traceback}
    orchestrator.dead_letter(delivery.queue, OutgoingMessage(job, {"headers": headers}), reason)
    delivery.ack()


def _settle_failure(orchestrator: QueueOperations, delivery: Delivery, result: Result, policy: RetryPolicy) -> str:
    """Record, then retry now or dead-letter; returns the outcome."""
    retrying = policy.retries(result.job)
    record_finished(orchestrator.recorder, delivery.queue, [Outcome.of(result.job, retrying=retrying)])
    if retrying:
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
    deadline = time.monotonic() + (check_timeout("timeout", timeout) or 0)
    while True:  # cancelled jobs are acknowledged and skipped
        delivery = orchestrator.take(queue, max(deadline - time.monotonic(), 0) if timeout else None, ack=True)
        if delivery is None:
            yield None
            return
        job = _decode(orchestrator, delivery)
        if record_started(orchestrator.recorder, queue, [job])[0]:
            break
        delivery.ack()
    started = start(job)
    try:
        yield job
    except Exception as exc:
        _settle_failure(orchestrator, delivery, fail(job, started, *describe(exc)), policy)
        raise
    complete(job, started)
    record_finished(orchestrator.recorder, queue, [Outcome.of(job)])
    delivery.ack()


class Worker:
    """Consume queues and run ``handler`` for every job, at least once.

    Args:
        orchestrator: where the queues live (and where retries and dead letters are published).
        queues: queue name(s) to consume.
        handler: ``(job) -> result``; a returned ``JobOutput`` is stored on ``job.payload.output``.
        concurrency: jobs run at the same time: handler threads, or child processes.
        prefetch: messages taken ahead of acknowledgements (default: 4 x concurrency, as
            Celery's default ``worker_prefetch_multiplier``); a warm stop returns the ones not
            started, a crash returns them when the worker's lease expires.
        pool: ``"threads"``, or ``"processes"`` for CPU-bound handlers: children forked on Linux
            (elsewhere spawned, and the handler must be importable); the job and the returned
            ``JobOutput`` cross as JSON, and changes the handler makes to the job stay in the child.
        time_limit: seconds one run of a job may take, after which it has failed (retried or
            dead-lettered by the policy). With processes the child is killed (SIGKILL) and
            replaced; a thread cannot be killed: it runs on, and its late result is ignored.
        shutdown_grace: seconds a warm shutdown waits for jobs in progress before it turns cold.
        max_retries, retry_backoff, retry_backoff_max: the :class:`RetryPolicy`
            (a job's own ``max_retries`` wins).
        on_event: called with a :class:`JobEvent` per settled job, on the thread that settled it.
        max_message_bytes: larger messages are dead-lettered undecoded (default: the
            orchestrator's ``limits``, 16 MiB).
        wait_for_queues: a queue that does not exist yet is waited for (looked up with a backoff
            up to 5 s, until :meth:`stop`) instead of raising ``QueueNotFound``.
        declare_queues: a queue that does not exist is declared (fifo).

    Raises:
        InvalidArgument: a number out of range or an unknown pool, before the broker is used.
    """

    def __init__(
        self,
        orchestrator: QueueOperations,
        queues: str | Sequence[str],
        handler: Handler,
        *,
        concurrency: int = 1,
        prefetch: int | None = None,
        pool: Pool = "threads",
        time_limit: float | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 30.0,
        on_event: Callable[[JobEvent], None] | None = None,
        max_message_bytes: int | None = None,
        wait_for_queues: bool = False,
        declare_queues: bool = False,
    ) -> None:
        if pool not in POOLS:
            raise InvalidArgument("pool", pool, f"choose one of {', '.join(POOLS)}")
        self.concurrency = check_count("concurrency", concurrency)
        self.prefetch = PREFETCH_MULTIPLIER * concurrency if prefetch is None else check_count("prefetch", prefetch)
        self.pool = pool
        self.time_limit = check_time_limit(time_limit)
        check_seconds("shutdown_grace", shutdown_grace)
        self.shutdown_grace = float(shutdown_grace)
        self.policy = RetryPolicy(max_retries, retry_backoff, retry_backoff_max)
        self.max_message_bytes = None if max_message_bytes is None else check_count("max_message_bytes", max_message_bytes)
        self.orchestrator = orchestrator
        self.queues = [queues] if isinstance(queues, str) else list(queues)
        self.handler = handler
        self.on_event = on_event
        self.wait_for_queues = wait_for_queues
        self.declare_queues = declare_queues
        self.stats = WorkerStats()
        self._stopping = threading.Event()
        self._cold = threading.Event()
        self._wake = threading.Event()  # a job was settled or given back, or a cold stop came
        self._room = threading.Event()  # few enough jobs dispatched: fetch again (see _await_room)
        self._refill_at = max(self.concurrency - 1, self.prefetch // 2)
        self._lock = threading.Lock()
        self._threads: DaemonThreadPool | None = None
        self._processes: ProcessPool | None = None
        self._outcomes: OutcomeWriter | None = None
        self._pending: dict[Delivery, Task] = {}  # dispatched, result not in yet
        self._delayed: dict[Delivery, tuple[threading.Timer, Job]] = {}
        self._settling = 0  # settlements and held retries being sent
        self._consumer: Consumer | None = None
        self._registration: Registration | None = None
        self._consuming = False  # the current connection got as far as consuming

    @property
    def in_flight(self) -> int:
        """Jobs taken from the broker and not settled yet: waiting for a handler, running,
        being settled, or waiting out a retry backoff."""
        with self._lock:
            return len(self._pending) + len(self._delayed) + self._settling

    @property
    def consuming(self) -> bool:
        """Whether a consumer is open on the queues (not before :meth:`run`, while
        reconnecting, or after)."""
        return self._consumer is not None

    def stop(self, cold: bool = False) -> None:
        """Ask :meth:`run` to finish. Warm: no new job starts, prefetched ones go back to the
        queue, jobs in progress get ``shutdown_grace`` seconds to finish. ``cold=True`` (or a
        second SIGINT/SIGTERM): jobs in progress go back to the queue too, child processes are
        killed, and :meth:`run` returns at once. Safe from signal handlers and other threads; a
        stop before :meth:`run` makes it return at once."""
        if cold:
            self._cold.set()
        self._stopping.set()
        self._wake.set()
        self._room.set()
        consumer = self._consumer
        if consumer is not None:  # end its fetch; from a thread: a signal handler must not take locks
            threading.Thread(target=self._wake_consumer, args=(consumer,), daemon=True).start()

    @staticmethod
    def _wake_consumer(consumer: Consumer) -> None:
        try:
            consumer.wake()
        except BrokerUnavailable:
            pass  # the fetch fails on its own

    def run(self, until_empty: bool = False) -> WorkerStats:
        """Consume until :meth:`stop` (or SIGINT/SIGTERM in the main thread: the first is a warm
        stop, the second a cold one); with ``until_empty`` also return once the queues are empty
        and nothing is in flight.

        A lost broker connection is re-established (bounded retries, then
        :class:`BrokerUnavailable`); messages of the lost connection are delivered again.

        Raises:
            QueueNotFound: a queue does not exist (unless ``wait_for_queues``/``declare_queues``).
        """
        with self._signals_stop():
            try:
                self._await_queues()
                self.stats = WorkerStats()
                if not self._stopping.is_set():
                    self._threads = DaemonThreadPool(self.concurrency, "mindtrace-worker")
                    if self.orchestrator.results is not None:
                        self._outcomes = OutcomeWriter(self.orchestrator.recorder, self._count_record_failure, busy=self._busy)
                    if self.pool == "processes":
                        self._processes = ProcessPool(self.handler, self.concurrency, self.time_limit)
                    self._registration = Registration(self.orchestrator.backend, WorkerInfo(
                        queues=self.queues, pool=self.pool, concurrency=self.concurrency,
                    ), self._registry_snapshot)
                    self._registration.start()
                    self._consume_reconnecting(until_empty)
            finally:
                if self._registration is not None:
                    self._registration.close()
                    self._registration = None
                self._close_pools()
                # a stop() before run() still counts; after it, run() can start again
                self._stopping.clear()
                self._cold.clear()
        return self.stats

    def _registry_snapshot(self) -> dict[str, object]:
        """What the registry shows of this worker now: the jobs it holds and its counts."""
        with self._lock:
            in_flight = [delivery.job_id for delivery in self._pending if delivery.job_id]
        stats = self.stats
        return {"in_flight": in_flight, "processed": stats.processed, "failed": stats.dead_lettered,
                "retried": stats.retried}

    @contextmanager
    def _signals_stop(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(cold=self._stopping.is_set())  # the first signal is warm, the next cold

    def _await_queues(self) -> None:
        """Raise QueueNotFound for a missing queue, or declare it, or wait until it exists or
        :meth:`stop` is called."""
        delay = _QUEUE_WAIT_FIRST
        while missing := [queue for queue in self.queues if not self._exists(queue)]:
            if self.declare_queues:
                for queue in missing:
                    self.orchestrator.declare_queue(queue)
                logger.warning("declared missing queue(s) %s", ", ".join(missing))
            elif not self.wait_for_queues:
                raise QueueNotFound(missing[0])
            else:
                if delay == _QUEUE_WAIT_FIRST:
                    logger.warning("waiting for queue(s) %s to be declared", ", ".join(missing))
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, _QUEUE_WAIT_MAX)

    def _exists(self, queue: str) -> bool:
        try:
            self.orchestrator.queue_spec(queue)
        except QueueNotFound:
            return False
        return True

    def _consume_reconnecting(self, until_empty: bool) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._consume(until_empty)
                return
            except BrokerUnavailable:
                failures = 1 if self._consuming else failures + 1  # a fresh drop, or still down
                if failures >= _RECONNECT_ATTEMPTS:
                    raise
                logger.warning("broker connection lost; reconnecting (attempt %d)", failures)
                time.sleep(min(0.2 * 2**failures, 2.0))

    def _close_pools(self) -> None:
        if self._outcomes is not None:
            self._outcomes.close()
            self._outcomes = None
        if self._threads is not None:
            self._threads.close()
            self._threads = None
        if self._processes is not None:
            self._processes.close()
            self._processes = None

    def _consume(self, until_empty: bool) -> None:
        """One consumer's life, until the run is over; a broken connection raises
        :class:`BrokerUnavailable` (``_consuming`` tells whether it had worked)."""
        self._consuming = False
        consumer = self._consumer = self.orchestrator.backend.consumer(self.queues, self.prefetch)
        try:
            drained = False
            while not self._stopping.is_set():
                self._await_room(self.concurrency - 1 if drained else self._refill_at)
                if self._stopping.is_set():
                    break
                with self._lock:
                    asked = max(self.prefetch - len(self._pending), 1)
                deliveries = consumer.fetch(asked, _BURST_FETCH if until_empty else _IDLE_FETCH)
                drained = len(deliveries) < asked  # the queues ran dry: fetch when a handler is free
                self._consuming = True
                self._dispatch(deliveries)
                if until_empty and not deliveries and self._drained():
                    return
        except BrokerUnavailable:
            self._abandon()
            raise
        finally:
            self._shut_down(consumer)

    def _await_room(self, refill_at: int) -> None:
        """Wait until at most ``refill_at`` jobs are dispatched and unfinished: the next fetch
        then takes a batch (waking up for every single free place costs more than quick jobs
        do), and a stop() from a handler is seen here instead of after an idle fetch."""
        while not self._stopping.is_set():
            self._room.clear()
            with self._lock:
                if len(self._pending) <= refill_at:
                    return
            self._room.wait(_IDLE_FETCH)

    def _drained(self) -> bool:
        with self._lock:
            busy = bool(self._pending or self._delayed or self._settling)
        return not busy and all(self._ready(queue) == 0 for queue in self.queues)

    def _ready(self, queue: str) -> int:
        try:
            return self.orchestrator.count_queue_messages(queue)
        except QueueNotFound:
            return 0  # deleted while consumed: nothing left in it

    # -- per message -----------------------------------------------------------------------------

    def _dispatch(self, deliveries: Sequence[Delivery]) -> None:
        """Decode a fetched batch, record it RUNNING (one store call per queue; cancelled jobs
        are skipped) and hand the jobs to the pool."""
        taken: dict[str, list[tuple[Delivery, Job]]] = {}
        for delivery in deliveries:
            if self._stopping.is_set():
                delivery.reject(requeue=True)  # taken while stopping: back first in line
                self._count_returned(1)
                continue
            try:
                job = _decode(self.orchestrator, delivery, self.max_message_bytes)
            except JobDecodeError as exc:
                logger.warning("%s", exc)  # dead-lettered and acknowledged by _decode
                self._emit(JobEvent("-", delivery.queue, 0.0, "dead-lettered", error=exc.reason))
                continue
            delivery.job_id = job.id
            taken.setdefault(delivery.queue, []).append((delivery, job))
        assert self._threads is not None
        for queue, batch in taken.items():
            runs = record_started(self.orchestrator.recorder, queue, [job for _, job in batch], self._count_record_failure)
            with self._lock:  # held until all are recorded: a handler thread looks its job up when done
                for (delivery, job), run in zip(batch, runs):
                    if run:
                        self._pending[delivery] = self._threads.submit(partial(self._run_job, delivery, job, self._processes))
            for (delivery, job), run in zip(batch, runs):
                if not run:
                    self._skip(delivery, job)

    def _run_job(self, delivery: Delivery, job: Job, processes: ProcessPool | None) -> None:
        """Run the handler (on this thread, or in a child process) and settle the job."""
        started = start(job)
        with tracing.processing(delivery.queue, delivery.headers, job.id, job.attempts) as outcome:
            if processes is not None:
                result = processes.run(job, started)
            elif self.time_limit is None:
                result = run_handler(self.handler, job, started)
            else:
                result = run_with_soft_limit(self.handler, job, started, self.time_limit)
            outcome(result.error)
        with self._lock:
            mine = self._pending.pop(delivery, None) is not None
            self._settling += mine
            room = len(self._pending) < self.concurrency or len(self._pending) <= self._refill_at
        self._wake.set()
        if room:
            self._room.set()
        if not mine:  # a cold shutdown or a lost connection gave the job back
            logger.info("job %s on %s: late result ignored (%s)", job.id, delivery.queue, result.error or "completed")
            return
        if self._outcomes is None:
            self._report_settled(delivery, result)
        else:  # recorded first, then settled, on the writer's thread
            finished = Outcome.of(job, retrying=self.policy.retries(job))
            self._outcomes.submit(delivery.queue, finished, partial(self._report_settled, delivery, result))

    def _report_settled(self, delivery: Delivery, result: Result) -> None:
        try:
            self._report(delivery, result)
        finally:
            with self._lock:
                self._settling -= 1
            self._wake.set()

    def _busy(self) -> bool:
        """Jobs are dispatched and not finished."""
        with self._lock:
            return bool(self._pending)

    def _skip(self, delivery: Delivery, job: Job) -> None:
        """A cancelled job: acknowledged without running (the ack is buffered with the fetch)."""
        try:
            delivery.ack()
        except Exception:  # the broker failed: it comes back, and is skipped again
            logger.warning("job %s on %s: cancelled, could not acknowledge", job.id, delivery.queue, exc_info=True)
            return
        logger.info("job %s on %s: cancelled, skipped", job.id, delivery.queue)
        self._emit(JobEvent(job.id, delivery.queue, 0.0, "cancelled", job.attempts, None, job))

    def _count_record_failure(self) -> None:
        with self._lock:
            self.stats.record_failures += 1

    def _report(self, delivery: Delivery, result: Result) -> None:
        """Settle the job and tell the observers."""
        job = result.job
        try:
            outcome = self._settle(delivery, result)
        except Exception:  # the broker failed: the job stays in flight and comes back
            logger.warning("job %s on %s: could not settle; it will be delivered again", job.id, delivery.queue, exc_info=True)
            return
        logger.info("job %s on %s: %s in %.3fs (attempt %d)", job.id, delivery.queue, outcome, result.duration, job.attempts)
        self._emit(JobEvent(job.id, delivery.queue, result.duration, outcome, job.attempts, result.error, job))

    def _settle(self, delivery: Delivery, result: Result) -> str:
        job = result.job
        if result.error is None:
            delivery.ack()  # done: the job leaves the broker
            return "completed"
        if self.policy.retries(job):
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
            self._settling += 1  # still in hand: run(until_empty=True) must not end meanwhile
        try:
            _requeue_copy(self.orchestrator, delivery, held[1])
        except Exception:  # the original stays in flight and comes back
            logger.warning("job %s on %s: retry not published; it will be delivered again", held[1].id, delivery.queue, exc_info=True)
        finally:
            with self._lock:
                self._settling -= 1
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
            except Exception:  # a failing observer must not stop the worker
                logger.exception("on_event failed for job %s on %s", event.job_id, event.queue)

    def _count_returned(self, count: int) -> None:
        with self._lock:
            self.stats.returned += count

    # -- shutdown ----------------------------------------------------------------------------------

    def _shut_down(self, consumer: Consumer) -> None:
        """Give back what was taken and not started, let the jobs in progress finish (warm) or
        give them back too (cold), publish held retries, then close: what the consumer still
        holds goes back to the front of its queue."""
        try:
            self._return_waiting()
            if not self._await_in_flight():
                self._return_in_flight()
            with self._lock:
                delayed = list(self._delayed.items())
            for delivery, (timer, _) in delayed:
                timer.cancel()
                self._retry(delivery)  # publishes now, unless the timer just did
            consumer.close()
        except Exception:  # the broker failed: what is unsettled comes back
            logger.warning("could not settle in-flight jobs; the broker will deliver them again", exc_info=True)
            self._abandon()
        finally:
            self._consumer = None

    def _return_waiting(self) -> None:
        """Jobs dispatched but not started go back to their queue, first in line, in order."""
        with self._lock:
            waiting = [delivery for delivery, task in self._pending.items() if task.cancel()]
            for delivery in waiting:
                del self._pending[delivery]
        for delivery in waiting:
            delivery.reject(requeue=True)
        self._count_returned(len(waiting))

    def _await_in_flight(self) -> bool:
        """Wait until the jobs in progress are settled (True), or until a cold stop is asked for
        or ``shutdown_grace`` runs out (False). Jobs still running after half a second are
        announced (a stop from a handler, or jobs just finishing, need no warning)."""
        deadline = time.monotonic() + self.shutdown_grace
        announce_at = time.monotonic() + _ANNOUNCE_AFTER
        announced = False
        while True:
            self._wake.clear()
            with self._lock:
                busy = len(self._pending) + self._settling
            now = time.monotonic()
            remaining = deadline - now
            if not busy:
                return True
            if self._cold.is_set() or remaining <= 0:
                return False
            if not announced and now >= announce_at:
                announced = True
                logger.warning(
                    "warm shutdown: waiting up to %g s for %d job(s) in progress; "
                    "stop again (a second SIGINT/SIGTERM) for a cold shutdown", self.shutdown_grace, busy
                )
            self._wake.wait(remaining if announced else min(remaining, announce_at - now))

    def _return_in_flight(self) -> None:
        """Cold: give every job in progress back to its queue (their late results are ignored),
        once the children running them are dead."""
        with self._lock:
            in_flight, self._pending = list(self._pending.items()), {}
        if self._processes is not None:
            self._processes.kill()
        for delivery, task in in_flight:
            task.cancel()
            delivery.reject(requeue=True)
        self._count_returned(len(in_flight))
        running_on = "their processes were killed" if self._processes is not None else "their threads run on"
        logger.warning("cold shutdown: %d job(s) in progress given back to the queue; %s", len(in_flight), running_on)

    def _abandon(self) -> None:
        """Forget the messages of a broken connection: their settlements cannot be sent, the
        broker delivers them again (late results of jobs in progress are ignored)."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            delayed, self._delayed = list(self._delayed.values()), {}
        for task in pending:
            task.cancel()
        for timer, _ in delayed:
            timer.cancel()
