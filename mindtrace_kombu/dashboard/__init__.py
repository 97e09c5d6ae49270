"""``mindtrace-jobs dashboard``: a web dashboard of queues, workers, jobs and dead letters.

Layers, each one job: :mod:`.server` (HTTP) -> :mod:`.app` (authentication, CSRF, routing,
actions) -> :mod:`.data` and :mod:`.sampling` (reads from the orchestrator) and :mod:`.pages`
(HTML, from :mod:`.layout`, :mod:`.charts`, :mod:`.assets`); :mod:`.security` holds the token and
CSRF checks. Nothing outside this package imports it but the command line.
"""

from __future__ import annotations

from .server import DashboardServer

__all__ = ["DashboardServer"]
