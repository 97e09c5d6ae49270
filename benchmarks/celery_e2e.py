"""Celery end to end on this package's ``mindtrace-redis`` transport: the same ``celery worker -P
prefork -c 2``, task and runner as the stock-transport Celery row of :mod:`benchmarks.e2e`, at
Celery's and the transport's default settings, so the two rows compare the transports alone.
"""

from __future__ import annotations

from functools import partial

from benchmarks.e2e import celery_prefork, end_to_end
from benchmarks.harness import Scenario
from benchmarks.names import CELERY_E2E_OURS


def scenarios(backend: str) -> list[Scenario]:
    """The mindtrace-redis scenario, on Redis only."""
    if backend != "redis":
        return []
    system = celery_prefork(CELERY_E2E_OURS, transport="mindtrace-redis")
    return [Scenario(system.name, partial(end_to_end, backend=backend, system=system))]
