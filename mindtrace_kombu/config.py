"""Where the broker is: environment variables and Celery configuration objects, without Celery.

``MINDTRACE_BROKER_URL`` wins over ``CELERY_BROKER_URL``; without either the broker is Redis on
localhost. A Celery configuration (a module such as ``celeryconfig``, or any object) names the
broker by its ``broker_url``, which ``CELERY_BROKER_URL`` overrides exactly as Celery itself does.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from .transport import REDIS_TRANSPORT

__all__ = [
    "BROKER_URL_VARIABLES",
    "DEFAULT_BROKER_URL",
    "SENTINEL_TRANSPORT",
    "BrokerSettings",
    "broker_settings",
    "broker_url_from_env",
    "exact_order_transport",
    "load_config",
]

DEFAULT_BROKER_URL = "redis://localhost:6379/0"
#: Environment variables naming the broker, the first one set wins.
BROKER_URL_VARIABLES = ("MINDTRACE_BROKER_URL", "CELERY_BROKER_URL")
#: Celery ``broker_transport`` for exact order through Redis Sentinel.
SENTINEL_TRANSPORT = "mindtrace_kombu.transport.sentinel:Transport"


def broker_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The broker URL: ``MINDTRACE_BROKER_URL``, else ``CELERY_BROKER_URL``, else local Redis."""
    environ = os.environ if environ is None else environ
    for variable in BROKER_URL_VARIABLES:
        if environ.get(variable):
            return environ[variable]
    return DEFAULT_BROKER_URL


def exact_order_transport(url: str) -> str | None:
    """The Celery ``broker_transport`` that gives exact priorities on ``url``'s broker.

    Redis URLs (``redis://``, ``rediss://``, ``redis+socket://``) get this package's Redis
    transport and ``sentinel://`` its Sentinel variant; other brokers need none (RabbitMQ has
    native priorities), so None leaves Celery's choice alone.
    """
    scheme = urlsplit(url.split(";", 1)[0]).scheme.lower()
    if scheme in ("redis", "rediss", "redis+socket"):
        return REDIS_TRANSPORT
    if scheme == "sentinel":
        return SENTINEL_TRANSPORT
    return None


@dataclass(frozen=True)
class BrokerSettings:
    """The broker part of a Celery configuration."""

    url: str
    transport_options: dict[str, Any] = field(default_factory=dict)
    connect_timeout: float | None = None
    result_backend: str | None = None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``client_from_url``: only those the configuration sets."""
        options: dict[str, Any] = {}
        if self.transport_options:
            options["transport_options"] = dict(self.transport_options)
        if self.connect_timeout is not None:
            options["connect_timeout"] = float(self.connect_timeout)
        return options


def load_config(config: str | object) -> object:
    """The configuration object: ``config`` itself, or the module it names (``"celeryconfig"``)."""
    return importlib.import_module(config) if isinstance(config, str) else config


def broker_settings(config: str | object) -> BrokerSettings:
    """Read the broker settings of a Celery configuration module or object.

    The URL is ``CELERY_BROKER_URL`` if set (Celery gives it precedence too), else the
    configuration's ``broker_url``, else :func:`broker_url_from_env`; ``result_backend`` is
    read as it is (the Orchestrator's job records).

    Raises:
        ModuleNotFoundError: ``config`` names a module that cannot be imported.
    """
    source = load_config(config)
    url = os.environ.get("CELERY_BROKER_URL") or getattr(source, "broker_url", None) or broker_url_from_env()
    return BrokerSettings(
        url=str(url),
        transport_options=dict(getattr(source, "broker_transport_options", None) or {}),
        connect_timeout=getattr(source, "broker_connection_timeout", None),
        result_backend=getattr(source, "result_backend", None) or None,
    )
