"""Which broker the command line talks to: the option, the environment, a Celery config module."""

from __future__ import annotations

import os
import sys

import click

from ..config import BROKER_URL_VARIABLES, DEFAULT_BROKER_URL, BrokerSettings, broker_settings

__all__ = ["DEFAULT_CONFIG_MODULE", "cwd_importable", "resolve_broker"]

#: Config module read when nothing else names the broker; skipped when it does not exist.
DEFAULT_CONFIG_MODULE = "celeryconfig"


def cwd_importable() -> None:
    """Put the current directory on ``sys.path``, as ``celery -A`` does, for user modules."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def resolve_broker(option: str | None, config_module: str | None) -> tuple[BrokerSettings, str]:
    """The broker settings and where they came from; the first source naming a broker wins.

    Order: ``--broker``; ``MINDTRACE_BROKER_URL``; ``CELERY_BROKER_URL``; the ``broker_url`` (with
    ``broker_transport_options`` and ``broker_connection_timeout``) of ``--config MODULE``, default
    ``celeryconfig``, imported from the current directory as Celery does; ``redis://localhost:6379/0``.

    Raises:
        click.UsageError: a module named with ``--config`` cannot be imported.
    """
    if option:
        return BrokerSettings(option), "--broker"
    for variable in BROKER_URL_VARIABLES:
        if os.environ.get(variable):
            return BrokerSettings(os.environ[variable]), f"${variable}"
    module_name = config_module or DEFAULT_CONFIG_MODULE
    cwd_importable()
    try:
        return broker_settings(module_name), f"config module {module_name!r}"
    except ModuleNotFoundError as exc:
        if config_module is not None or exc.name != module_name:
            raise click.UsageError(f"cannot import config module {module_name!r}: {exc}") from None
    return BrokerSettings(DEFAULT_BROKER_URL), "the default"
