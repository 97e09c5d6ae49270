"""A worker process for the crash, restart and shutdown tests.

Usage: python -m tests.worker_process URL QUEUE LOG [--sleep S] [--prefetch N] [--lease S] [--claim]

Appends ``start <id>`` and ``done <id>`` lines to LOG (O_APPEND writes survive kill -9).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from mindtrace_kombu import Job, Orchestrator
from mindtrace_kombu.clients import RedisClient, client_from_url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("log")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--claim", action="store_true", help="take one job with claim() and hang in it")
    args = parser.parse_args()
    client = client_from_url(args.url)
    if isinstance(client, RedisClient):  # a dead worker's jobs come back after this many seconds
        client.transport_options.update(lease_timeout=args.lease)
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    if args.claim:
        with Orchestrator(client).claim(args.queue, timeout=30) as job:
            assert job is not None
            os.write(log, f"start {job.id}\n".encode())
            print("ready", flush=True)
            time.sleep(3600)  # killed here

    def handler(job: Job) -> None:
        os.write(log, f"start {job.id}\n".encode())
        time.sleep(args.sleep)
        os.write(log, f"done {job.id}\n".encode())

    print("ready", flush=True)
    stats = Orchestrator(client).consume(args.queue, handler, prefetch=args.prefetch)
    print(f"stopped processed={stats.processed}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
