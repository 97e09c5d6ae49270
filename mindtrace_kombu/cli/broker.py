"""Which broker the command line talks to: the option, the environment, a Celery config module."""

from __future__ import annotations

import os
import sys

import click

from ..config import BrokerSettings, broker_settings, broker_url_from_env

__all__ = ["DEFAULT_CONFIG_MODULE", "cwd_importable", "resolve_broker"]

#: Config module read when neither ``--broker`` nor ``MINDTRACE_BROKER_URL`` names the broker.
DEFAULT_CONFIG_MODULE = "celeryconfig"


def cwd_importable() -> None:
    """Put the current directory on ``sys.path``, as ``celery -A`` does, for user modules."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def resolve_broker(option: str | None, config_module: str | None) -> tuple[BrokerSettings, str]:
    """The broker settings and where they came from.

    Order: ``--broker``; ``MINDTRACE_BROKER_URL``; the config module (``--config``, default
    ``celeryconfig`` when importable) read as Celery reads it, ``CELERY_BROKER_URL`` over its
    ``broker_url``, with its ``broker_transport_options`` and ``broker_connection_timeout``;
    ``CELERY_BROKER_URL``; ``redis://localhost:6379/0``.

    Raises:
        click.UsageError: a module named with ``--config`` cannot be imported.
    """
    if option:
        return BrokerSettings(option), "--broker"
    if os.environ.get("MINDTRACE_BROKER_URL"):
        return BrokerSettings(os.environ["MINDTRACE_BROKER_URL"]), "$MINDTRACE_BROKER_URL"
    module_name = config_module or DEFAULT_CONFIG_MODULE
    cwd_importable()
    try:
        return broker_settings(module_name), f"config module {module_name!r}"
    except ModuleNotFoundError as exc:
        if config_module is not None or exc.name != module_name:
            raise click.UsageError(f"cannot import config module {module_name!r}: {exc}") from None
    return BrokerSettings(broker_url_from_env()), "the environment or the default"
