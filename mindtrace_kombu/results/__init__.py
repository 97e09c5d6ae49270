"""Job status and results across processes: one small protocol (:mod:`.base`), stores in
process memory (:mod:`.memory`), Redis (:mod:`.redis`) and SQL (:mod:`.sql`, SQLAlchemy: the
``[sql]`` extra), chosen by URL (:mod:`.urls`, imported by the Orchestrator: it needs the
clients, which the core below them must not import)."""

from __future__ import annotations

from .base import DEFAULT_TTL, ResultStore
from .memory import MemoryResultStore
from .redis import RedisResultStore

__all__ = ["DEFAULT_TTL", "MemoryResultStore", "RedisResultStore", "ResultStore"]
