"""mindtrace-kombu: pydantic jobs on Kombu, one Orchestrator API over in-process, Redis and RabbitMQ.

The public names below are imported on first use (PEP 562). Kombu loads this package's
``kombu.serializers`` entry point from the middle of importing ``kombu.serialization``; importing
the orchestrator or the clients at that moment would re-enter Kombu's half-initialised modules
(``ImportError: cannot import name 'prepare_accept_content'``) in every plain Kombu or Celery
process. So importing the package only registers the serializer and the transport aliases.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import serialization as _serialization  # registers the Kombu serializer
from . import transport as _transport  # registers the mindtrace-memory / mindtrace-redis aliases
from .errors import *  # noqa: F403 - the error hierarchy, dependency-free
from . import errors as _errors

if TYPE_CHECKING:
    from .clients import Client, LocalClient, RabbitMQClient, RedisClient, RedisClusterClient, RedisSentinelClient, client_from_url
    from .models import (
        QUEUE_MAPPING,
        BackendType,
        ExecutionStatus,
        Job,
        JobInput,
        JobOutput,
        JobSchema,
        JobType,
    )
    from .aio import AsyncOrchestrator
    from .orchestrator import Orchestrator
    from .queues import QueueSpec, QueueType
    from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    # orchestration
    "Orchestrator",
    "AsyncOrchestrator",
    "Worker",
    # clients
    "Client",
    "LocalClient",
    "RabbitMQClient",
    "RedisClient",
    "RedisClusterClient",
    "RedisSentinelClient",
    "client_from_url",
    # models
    "BackendType",
    "ExecutionStatus",
    "Job",
    "JobInput",
    "JobOutput",
    "JobSchema",
    "JobType",
    "QUEUE_MAPPING",
    "QueueSpec",
    "QueueType",
    # errors: every name of mindtrace_kombu.errors
    *_errors.__all__,
]

#: Module that defines each public name; add new exports here and to ``__all__``.
_ORIGINS: dict[str, str] = {
    **dict.fromkeys(["Orchestrator"], ".orchestrator"),
    **dict.fromkeys(["AsyncOrchestrator"], ".aio"),
    **dict.fromkeys(["Worker"], ".worker"),
    **dict.fromkeys(
        ["Client", "LocalClient", "RabbitMQClient", "RedisClient", "RedisClusterClient", "RedisSentinelClient", "client_from_url"],
        ".clients",
    ),
    **dict.fromkeys(
        ["BackendType", "ExecutionStatus", "Job", "JobInput", "JobOutput", "JobSchema", "JobType", "QUEUE_MAPPING"],
        ".models",
    ),
    **dict.fromkeys(["QueueSpec", "QueueType"], ".queues"),
}


def __getattr__(name: str) -> Any:
    origin = _ORIGINS.get(name)
    if origin is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(origin, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
