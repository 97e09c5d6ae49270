"""The Mindtrace import path: ``from mindtrace.jobs import Orchestrator, RedisClient, Job``."""

from mindtrace_kombu import *  # noqa: F403
from mindtrace_kombu import __all__, __version__  # noqa: F401
