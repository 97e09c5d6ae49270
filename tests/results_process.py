"""Producer and worker processes for the cross-process result-store tests.

Usage:
    python -m tests.results_process produce BROKER RESULTS QUEUE    prints the job ids as JSON
    python -m tests.results_process work BROKER RESULTS QUEUE [--hang-once MARKER] [--lease S]

``produce`` publishes three jobs (one completes, one fails past its single retry, one is
cancelled before any worker starts). ``work`` drains the queue and exits; with ``--hang-once``
it runs until SIGTERM: the first job to arrive creates MARKER and hangs (to be killed), a later
run waits for ``MARKER.go`` and completes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from mindtrace_kombu import Job, Orchestrator
from mindtrace_kombu.clients import RedisClient, client_from_url

from tests.results_models import Doubled, handler, make


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["produce", "work"])
    parser.add_argument("broker")
    parser.add_argument("results")
    parser.add_argument("queue")
    parser.add_argument("--hang-once")
    parser.add_argument("--lease", type=float, default=30.0)
    args = parser.parse_args()
    client = client_from_url(args.broker)
    if isinstance(client, RedisClient):
        client.transport_options.update(lease_timeout=args.lease)
    orchestrator = Orchestrator(client, results=None if args.results == "default" else args.results)
    if args.command == "produce":
        ok, bad, cancelled = make(21), make(-1, max_retries=1), make(5)
        orchestrator.publish_many(args.queue, [ok, bad, cancelled])
        assert orchestrator.cancel(cancelled.id)
        print(json.dumps({"ok": ok.id, "bad": bad.id, "cancelled": cancelled.id}), flush=True)
        return

    def work(job: Job) -> Doubled:
        if args.hang_once:
            if not os.path.exists(args.hang_once):
                open(args.hang_once, "w").close()
                time.sleep(3600)  # killed here
            while not os.path.exists(f"{args.hang_once}.go"):  # the test has seen attempt 2 running
                time.sleep(0.02)
        return handler(job)

    print("ready", flush=True)
    stats = orchestrator.consume(
        args.queue, work, until_empty=not args.hang_once, retry_backoff=0.01, retry_backoff_max=0.01
    )
    print(json.dumps({"completed": stats.completed, "dead_lettered": stats.dead_lettered,
                      "cancelled": stats.cancelled, "record_failures": stats.record_failures}), flush=True)
    orchestrator.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
