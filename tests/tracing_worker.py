"""A worker process whose finished spans go to a file, for tests/test_tracing.py.

Usage: python -m tests.tracing_worker URL QUEUE SPANS

Consumes QUEUE with ``tests.worker_handlers.by_label`` until it is empty, with one retry and no
backoff (a ``doomed`` job is dead-lettered).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mindtrace_kombu import Orchestrator
from tests.tracing_spans import install
from tests.worker_handlers import by_label


def main() -> None:
    url, queue, spans = sys.argv[1:4]
    install(Path(spans))
    with Orchestrator.from_url(url) as orchestrator:
        orchestrator.consume(queue, by_label, until_empty=True, max_retries=1, retry_backoff=0)


if __name__ == "__main__":
    main()
