"""Prometheus metrics from the shell: ``exporter`` (queue gauges without a worker) and the
``worker --metrics-port`` server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import click

from .context import CliContext, CliError, json_option, pass_cli, queue_names_option

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

    from ..worker import Worker

__all__ = ["exporter", "serve_worker_metrics"]


def _serve(cli: CliContext, registry: CollectorRegistry, port: int, host: str, option: str) -> WSGIServer:
    """Serve ``registry`` on ``/metrics``; a port that cannot be bound is a usage error."""
    from ..metrics import serve

    try:
        server = serve(registry, port, host)
    except OSError as exc:
        raise click.BadParameter(f"cannot listen on {host}:{port}: {exc.strerror or exc}", param_hint=option) from None
    cli.output.note(f"metrics on http://{host}:{server.server_port}/metrics")
    return server


def _stop(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()


def serve_worker_metrics(cli: CliContext, worker: Worker, port: int, host: str) -> Callable[[], None]:
    """Serve ``worker``'s metrics (:class:`~mindtrace_kombu.metrics.WorkerMetrics`); returns
    what stops serving them."""
    from ..metrics import WorkerMetrics

    try:
        metrics = WorkerMetrics(worker)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    server = _serve(cli, metrics.registry, port, host, "--metrics-port")

    def stop() -> None:
        _stop(server)
        metrics.close()

    return stop


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="Port of /metrics (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@queue_names_option("Report this queue (repeatable) [default: every queue `queues` lists].")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Read the broker at most this often; scrapes in between get the last read.",
)
@json_option
@pass_cli
def exporter(cli: CliContext, port: int, host: str, names: Sequence[str], interval: float) -> None:
    """Serve queue gauges for Prometheus, without a worker.

    \b
    mindtrace_queue_ready{queue}         ready messages
    mindtrace_queue_unacked{queue}       delivered, not acknowledged (Redis, memory, RabbitMQ
                                         with the management plugin)
    mindtrace_queue_dead_letters{queue}  messages in QUEUE.dlq
    mindtrace_broker_up                  0 when the last read failed

    The broker is read when Prometheus scrapes, at most every --interval seconds: 2 round trips
    per queue, 1 for the unacknowledged counts, and 1 to list the queues without --queue.
    Runs until Ctrl-C or SIGTERM.
    """
    from ..metrics import QueueMetrics, new_registry

    try:
        registry = new_registry()
    except ImportError as exc:
        raise CliError(str(exc)) from None
    orchestrator = cli.connect(reconnect=True)
    for name in names:
        orchestrator.queue_spec(name)  # a queue that does not exist exits with code 3
    registry.register(QueueMetrics(orchestrator, names, interval))
    server = _serve(cli, registry, port, host, "--port")
    url = f"http://{host}:{server.server_port}/metrics"
    cli.output.result(
        {
            "event": "started",
            "time": datetime.now().isoformat(timespec="seconds"),
            "url": url,
            "broker": orchestrator.client.url,
            "queues": list(names),
            "interval": interval,
        },
        f"exporting {', '.join(names) or 'every queue'} at {orchestrator.client.url} on {url}",
    )
    try:
        threading.Event().wait()  # until a signal ends the command
    finally:
        _stop(server)
