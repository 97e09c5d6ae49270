"""OpenTelemetry tracing: W3C trace context (``traceparent``/``tracestate``) in message headers.

``publish`` runs in a PRODUCER span ``publish <queue>`` and writes its context into the headers
of every message of the batch; a worker (or a Celery :class:`~.celery.JobTask`) runs the handler
in a CONSUMER span ``process <queue>`` whose parent is that context, with a link to it as well
(the OpenTelemetry messaging conventions: the creation context is linked, and may be the parent
when one message is processed, as here). A retry is published under the received context, so
the next attempt stays in the trace; a dead letter keeps the headers.

The OpenTelemetry API is optional (``pip install "mindtrace-kombu[otel]"``) and looked for once,
when this module is imported: without it every function here is a no-op. With the API and no SDK
tracer provider, nothing is recorded and a publish only checks whether a context is current.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager, nullcontext
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # the [otel] extra is not installed
    trace = None  # type: ignore[assignment]

__all__ = ["ENABLED", "TRACE_HEADERS", "carried", "processing", "producing", "resumed"]

#: The W3C trace-context headers that carry a job's trace.
TRACE_HEADERS = ("traceparent", "tracestate")
#: Whether the OpenTelemetry API is installed.
ENABLED = trace is not None

Outcome = Callable[[str | None], None]
"""Reports a processed job's error (``"Type: message"``), or None for success, to its span."""


def carried(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The trace-context headers among ``headers`` (kept on dead letters; no OpenTelemetry needed)."""
    if not headers:
        return {}
    return {name: str(headers[name]) for name in TRACE_HEADERS if name in headers}


def _ignore(error: str | None) -> None:
    """The :data:`Outcome` of an untraced job."""


_NO_HEADERS: ContextManager[dict[str, str]] = nullcontext({})
_UNTRACED: ContextManager[Outcome] = nullcontext(_ignore)

if trace is not None:
    _tracer = trace.get_tracer("mindtrace_kombu")
    _ProxyProvider = trace.ProxyTracerProvider

    def _recording() -> bool:
        """A tracer provider is configured (an SDK), or a span is current (it may be a remote
        context, e.g. :func:`resumed`'s, to pass on)."""
        return not isinstance(trace.get_tracer_provider(), _ProxyProvider) or trace.get_current_span().get_span_context().is_valid

    @contextmanager
    def _producing(queue: str, count: int) -> Iterator[dict[str, str]]:
        attributes: dict[str, Any] = {
            "messaging.destination.name": queue, "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
        }
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        with _tracer.start_as_current_span(f"publish {queue}", kind=trace.SpanKind.PRODUCER, attributes=attributes):
            headers: dict[str, str] = {}
            propagate.inject(headers)
            yield headers

    def producing(queue: str, count: int) -> ContextManager[dict[str, str]]:
        """The PRODUCER span of publishing ``count`` jobs to ``queue``; yields the trace headers
        for their messages (empty when nothing is traced)."""
        return _producing(queue, count) if _recording() else _NO_HEADERS

    @contextmanager
    def _processing(queue: str, parent: Any, job_id: str, attempt: int) -> Iterator[Outcome]:
        creation = trace.get_current_span(parent).get_span_context()
        links = [trace.Link(creation)] if creation.is_valid else None
        attributes: dict[str, Any] = {
            "messaging.destination.name": queue, "messaging.operation.type": "process",
            "messaging.operation.name": "process", "messaging.message.id": job_id,
            "mindtrace.job.attempt": attempt,
        }
        with _tracer.start_as_current_span(
            f"process {queue}", context=parent, kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
        ) as span:

            def outcome(error: str | None) -> None:
                if error is not None:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, error))

            yield outcome

    def processing(queue: str, headers: Mapping[str, Any] | None, job_id: str, attempt: int) -> ContextManager[Outcome]:
        """The CONSUMER span of one job taken from ``queue``, child of (and linked to) the
        context in the message ``headers``; yields the :data:`Outcome` reporter. An exception
        raised in the block is recorded on the span."""
        trace_headers = carried(headers)
        parent = propagate.extract(trace_headers) if trace_headers else None
        if parent is None and isinstance(trace.get_tracer_provider(), _ProxyProvider):
            return _UNTRACED
        return _processing(queue, parent, job_id, attempt)

    @contextmanager
    def _resumed(headers: Mapping[str, str]) -> Iterator[None]:
        token = otel_context.attach(propagate.extract(headers))
        try:
            yield
        finally:
            otel_context.detach(token)

    def resumed(headers: Mapping[str, Any] | None) -> ContextManager[None]:
        """Make the trace context of a received message current (a retry is published in it)."""
        trace_headers = carried(headers)
        return _resumed(trace_headers) if trace_headers else nullcontext()

else:

    def producing(queue: str, count: int) -> ContextManager[dict[str, str]]:
        """No OpenTelemetry: no span, no trace headers."""
        return _NO_HEADERS

    def processing(queue: str, headers: Mapping[str, Any] | None, job_id: str, attempt: int) -> ContextManager[Outcome]:
        """No OpenTelemetry: no span."""
        return _UNTRACED

    def resumed(headers: Mapping[str, Any] | None) -> ContextManager[None]:
        """No OpenTelemetry: nothing to resume."""
        return nullcontext()
