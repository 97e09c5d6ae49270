"""Prometheus metrics of workers and queues, each on a ``CollectorRegistry`` of its own.

* :class:`WorkerMetrics` counts a :class:`~.worker.Worker`'s outcomes from its per-job events
  (``on_event``), times its handlers, and reads its in-flight and consumer gauges at scrape
  time; while it is open, the jobs this process publishes are counted too (through
  ``core.on_published``, which is None, at no cost, while no metrics are open).
* :class:`QueueMetrics` reads queue depths from the broker (ready, unacknowledged, dead
  letters), at most every ``max_age`` seconds: a worker's queues, or ``mindtrace-jobs
  exporter``'s without a worker.
* :func:`serve` exposes a registry on ``/metrics``.

Needs ``prometheus_client`` (``pip install "mindtrace-kombu[metrics]"``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import core
from .errors import BrokerUnavailable
from .inspection import QueueRow, queue_rows

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the [metrics] extra is not installed
    CollectorRegistry = None  # type: ignore[assignment, misc]

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .core import QueueOperations
    from .worker import JobEvent, Worker

__all__ = ["INSTALL_HINT", "QueueMetrics", "WorkerMetrics", "new_registry", "serve"]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'Prometheus metrics need prometheus_client: pip install "mindtrace-kombu[metrics]"'
_QUEUE = ("queue",)


def new_registry() -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one).

    Raises:
        ImportError: prometheus_client is not installed (the message says what to install).
    """
    if CollectorRegistry is None:
        raise ImportError(INSTALL_HINT)
    return CollectorRegistry()


# -- jobs published by this process ----------------------------------------------------------------

_publish_counters: tuple[Counter, ...] = ()
_publish_lock = threading.Lock()


def _count_published(queue: str, count: int) -> None:
    for counter in _publish_counters:
        counter.labels(queue).inc(count)


def _count_publishes(counter: Counter, on: bool) -> None:
    """Count this process's publishes on ``counter`` (``on``), or no longer; the publish hook is
    installed while any counter is."""
    global _publish_counters
    with _publish_lock:
        others = tuple(other for other in _publish_counters if other is not counter)
        _publish_counters = (*others, counter) if on else others
        core.on_published = _count_published if _publish_counters else None


# -- queues -------------------------------------------------------------------------------------------


class QueueMetrics:
    """Gauges of queue depth read from the broker when scraped, at most every ``max_age``
    seconds (scrapes in between get the last read); a collector for a ``CollectorRegistry``.

    Args:
        orchestrator: the broker's queue operations.
        queues: the queues to report; empty: every queue ``list_queues()`` finds (``<q>.dlq``
            folded into its queue's dead letters).
        max_age: seconds a read is served before the broker is read again.

    Exported: ``mindtrace_queue_ready``, ``mindtrace_queue_unacked`` (where the broker reports
    it), ``mindtrace_queue_dead_letters``, ``mindtrace_queue_consumers`` (RabbitMQ's count, else
    the registry's live workers) by queue, and ``mindtrace_broker_up`` (0: the last read
    failed, and the queue gauges are left out).
    """

    def __init__(self, orchestrator: QueueOperations, queues: Sequence[str] = (), max_age: float = 5.0) -> None:
        self.orchestrator = orchestrator
        self.queues = list(queues)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._families: list[GaugeMetricFamily] = []

    @staticmethod
    def _families_of(rows: Sequence[QueueRow], up: bool) -> list[GaugeMetricFamily]:
        families = [GaugeMetricFamily("mindtrace_broker_up", "1 if the last read of the queue counts succeeded", value=int(up))]
        for name, documentation, column in (
            ("mindtrace_queue_ready", "Messages ready in the queue", "ready"),
            ("mindtrace_queue_unacked", "Messages delivered to consumers and not acknowledged yet", "in_flight"),
            ("mindtrace_queue_dead_letters", "Messages in the queue's dead-letter queue", "dead_letters"),
            ("mindtrace_queue_consumers", "Consumers of the queue (RabbitMQ's count, else live workers)", "consumers"),
        ):
            family = GaugeMetricFamily(name, documentation, labels=_QUEUE)
            for row in sorted(rows, key=lambda row: row.name):
                value = getattr(row, column)
                if value is not None or column == "dead_letters":
                    family.add_metric([row.name], value or 0)
            families.append(family)
        return families

    def describe(self) -> list[GaugeMetricFamily]:
        """The metric names, without reading the broker (for the registry's duplicate check)."""
        return self._families_of([], up=False)

    def collect(self) -> list[GaugeMetricFamily]:
        """The gauges, read from the broker if the last read is older than ``max_age``."""
        with self._lock:
            if time.monotonic() - self._read_at >= self.max_age:
                self._families = self._read()
                self._read_at = time.monotonic()
            return self._families

    def _read(self) -> list[GaugeMetricFamily]:
        """The queue rows of :func:`..inspection.queue_rows` (its round trips)."""
        try:
            rows = queue_rows(self.orchestrator, self.queues)
        except BrokerUnavailable as exc:
            logger.warning("queue metrics: %s", exc)
            return self._families_of([], up=False)
        return self._families_of(rows, up=True)


# -- workers -------------------------------------------------------------------------------------------


class WorkerMetrics:
    """The metrics of one :class:`~.worker.Worker`, on ``registry`` (default: a new one).

    Counters by queue: ``mindtrace_jobs_published_total`` (jobs this process publishes while
    the metrics are open: the worker's retries, a handler's jobs), ``mindtrace_jobs_processed_total``
    (handler runs, whatever their outcome), ``mindtrace_jobs_failed_total`` (runs that raised or
    timed out), ``mindtrace_jobs_retried_total``, ``mindtrace_jobs_dead_lettered_total`` (failed
    jobs out of retries, and messages that are not jobs). Histogram by queue:
    ``mindtrace_job_duration_seconds`` (handler runs). Gauges: ``mindtrace_worker_jobs_in_flight``,
    ``mindtrace_worker_consumers`` by queue (1 while the worker consumes it), and the
    :class:`QueueMetrics` of its queues (read at most every ``queue_interval`` seconds).

    Raises:
        ImportError: prometheus_client is not installed.
    """

    def __init__(self, worker: Worker, registry: CollectorRegistry | None = None, *, queue_interval: float = 5.0) -> None:
        self.registry = registry = new_registry() if registry is None else registry

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, _QUEUE, registry=registry)

        self.published = counter("mindtrace_jobs_published", "Jobs published by this process")
        self.processed = counter("mindtrace_jobs_processed", "Handler runs, whatever their outcome")
        self.failed = counter("mindtrace_jobs_failed", "Handler runs that raised or ran past their time limit")
        self.retried = counter("mindtrace_jobs_retried", "Failed jobs published again for another attempt")
        self.dead_lettered = counter("mindtrace_jobs_dead_lettered", "Jobs and undecodable messages moved to <queue>.dlq")
        self.duration = Histogram("mindtrace_job_duration_seconds", "Handler run time", _QUEUE, registry=registry)
        in_flight = Gauge("mindtrace_worker_jobs_in_flight", "Jobs taken from the broker and not settled yet", registry=registry)
        in_flight.set_function(lambda: worker.in_flight)
        consumers = Gauge("mindtrace_worker_consumers", "Consumers this worker has open, by queue", _QUEUE, registry=registry)
        for queue in worker.queues:
            consumers.labels(queue).set_function(lambda: float(worker.consuming))
        registry.register(QueueMetrics(worker.orchestrator, worker.queues, queue_interval))
        worker.on_event = self._observer(worker.on_event)
        _count_publishes(self.published, True)

    def _observer(self, previous: Callable[[JobEvent], None] | None) -> Callable[[JobEvent], None]:
        def on_event(event: JobEvent) -> None:
            self.observe(event)
            if previous is not None:
                previous(event)

        return on_event

    def observe(self, event: JobEvent) -> None:
        """Count one settled job (a cancelled one, skipped without running, is not counted)."""
        queue = event.queue
        if event.outcome == "cancelled":
            return
        if event.job is None:  # a message that is not a job: dead-lettered, no handler ran
            self.dead_lettered.labels(queue).inc()
            return
        self.processed.labels(queue).inc()
        self.duration.labels(queue).observe(event.duration)
        if event.outcome != "completed":
            self.failed.labels(queue).inc()
            (self.retried if event.outcome == "retried" else self.dead_lettered).labels(queue).inc()

    def close(self) -> None:
        """Stop counting this process's publishes."""
        _count_publishes(self.published, False)


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread; ``shutdown()``
    the returned server to stop (port 0: any free port, ``server.server_port``)."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server

