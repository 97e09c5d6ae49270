"""``workers``: the live workers of the registry."""

from __future__ import annotations

import click

from .context import CliContext, json_option, pass_cli

__all__ = ["workers"]


@click.command()
@json_option
@pass_cli
def workers(cli: CliContext) -> None:
    """List the running workers: host, pid, queues, pool, jobs in flight, counts, last heartbeat.

    \\b
    A worker is listed from its start until it stops, or until its entry lapses when it died
    (Redis: after lease_timeout). RabbitMQ keeps no registry: `queues` shows its consumer counts.
    """
    found = cli.orchestrator.workers()
    if cli.output.json_mode:
        cli.output.json({"broker": cli.orchestrator.client.url, "workers": [worker.model_dump() for worker in found]})
        return
    cli.output.table(
        ("id", "kind", "host", "pid", "queues", "pool", "in flight", "processed", "failed", "retried", "heartbeat"),
        [(worker.id[:12], worker.kind, worker.host, worker.pid, ",".join(worker.queues),
          f"{worker.pool} x{worker.concurrency}", len(worker.in_flight), worker.processed, worker.failed,
          worker.retried, worker.heartbeat_at) for worker in found],
        title=f"Workers on {cli.orchestrator.client.url}",
    )
