"""``dashboard``: serve the web dashboard (:mod:`mindtrace_kombu.dashboard`) until interrupted."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import click

from .context import CliContext, CliError, pass_cli, queue_names_option

__all__ = ["dashboard"]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free one).")
@click.option("--read-only", is_flag=True, help="Hide and refuse the actions (requeue, purge dead letters).")
@click.option(
    "--token",
    envvar="MINDTRACE_DASHBOARD_TOKEN",
    metavar="TOKEN",
    help="Require this token on every request (login form or Authorization: Bearer) "
    "[default: $MINDTRACE_DASHBOARD_TOKEN].",
)
@queue_names_option("Also show this queue (needed on RabbitMQ without the management API). Repeatable.")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True, metavar="SECONDS",
    help="Seconds between samples of the queues (for rates and charts).",
)
@pass_cli
def dashboard(
    cli: CliContext, host: str, port: int, read_only: bool, token: str | None, names: Sequence[str], interval: float
) -> None:
    """Serve a web dashboard: queues, workers, job look-up, dead letters (requeue, purge).

    \b
    Binds to 127.0.0.1 unless --host says otherwise; give a token (--token or
    $MINDTRACE_DASHBOARD_TOKEN) before exposing it. Job look-up reads the result store
    ($MINDTRACE_RESULT_BACKEND, else the broker's own). Ctrl-C stops it.
    """
    from ..dashboard import DashboardServer  # the server only when asked for

    orchestrator = cli.connect(reconnect=True)
    for name in names:
        orchestrator.queue_spec(name)  # QueueNotFound for a name that does not exist
    try:
        server = DashboardServer(orchestrator, host, port, read_only=read_only, token=token, interval=interval)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    modes = [mode for mode, on in (("read-only", read_only), ("token required", bool(token))) if on]
    cli.output.note(f"dashboard of {orchestrator.client.url} on {server.url}" + (f" ({', '.join(modes)})" if modes else ""))
    if not token and not _loopback(host):
        cli.output.note(f"warning: anyone who can reach {host} can use the dashboard: set --token")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        cli.output.note("stopped")
    finally:
        server.close()
