"""The asyncio API: :class:`AsyncOrchestrator` (the Orchestrator's calls as coroutines, over a
bounded thread offload, with concurrent publishes coalesced) and :class:`AsyncWorker` (the sync
Worker with coroutine handlers run on the event loop). See docs/architecture.md, "Asyncio API".
"""

from __future__ import annotations

from .orchestrator import AsyncOrchestrator
from .worker import AsyncHandler, AsyncWorker, TimeLimitExceeded

__all__ = ["AsyncHandler", "AsyncOrchestrator", "AsyncWorker", "TimeLimitExceeded"]
