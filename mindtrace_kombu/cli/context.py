"""What every command shares: the resolved broker, the output, exit codes and error translation."""

from __future__ import annotations

import importlib
import logging
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import (
    BrokerUnavailable,
    InvalidArgument,
    InvalidPriority,
    InvalidQueueName,
    JobEncodeError,
    JobsError,
    MessageTooLarge,
    QueueArgumentsMismatch,
    QueueNotFound,
    QueueTypeMismatch,
    UnsupportedQueueType,
)
from ..queues import QueueType
from .broker import cwd_importable, resolve_broker
from .output import Output

if TYPE_CHECKING:
    from ..orchestrator import Orchestrator

__all__ = [
    "EXIT_ABORTED",
    "EXIT_BROKER_UNAVAILABLE",
    "EXIT_INVALID_INPUT",
    "EXIT_QUEUE_NOT_FOUND",
    "EXIT_USAGE",
    "BrokerDownError",
    "CliContext",
    "CliError",
    "InvalidInputError",
    "JobsGroup",
    "QueueMissingError",
    "import_object",
    "json_option",
    "mask_passwords",
    "pass_cli",
]

EXIT_ABORTED = 1  # declined at a prompt, interrupted outside a worker, or an unexpected error
EXIT_USAGE = 2  # click's own code: bad option, bad argument, bad broker URL
EXIT_QUEUE_NOT_FOUND = 3
EXIT_BROKER_UNAVAILABLE = 4
EXIT_INVALID_INPUT = 5

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]+@")

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("mindtrace_kombu.cli")


def mask_passwords(text: str) -> str:
    """Replace the password of every URL in ``text`` with ``**``, as Kombu masks URLs."""
    return _URL_PASSWORD.sub(r"\g<head>**@", text)


class CliError(click.ClickException):
    """A one-line error (password-masked); subclasses carry the exit codes."""

    exit_code = EXIT_ABORTED

    def __init__(self, message: str) -> None:
        super().__init__(mask_passwords(message))


class QueueMissingError(CliError):
    exit_code = EXIT_QUEUE_NOT_FOUND


class BrokerDownError(CliError):
    exit_code = EXIT_BROKER_UNAVAILABLE


class InvalidInputError(CliError):
    exit_code = EXIT_INVALID_INPUT


class CliContext:
    """Global options, and the orchestrator built from them on first use."""

    def __init__(
        self, broker: str | None, config: str | None, connect_timeout: float | None, output: Output
    ) -> None:
        self._broker = broker
        self._config = config
        self.connect_timeout = connect_timeout
        self.output = output
        self._orchestrator: Orchestrator | None = None

    @property
    def orchestrator(self) -> Orchestrator:
        """The orchestrator of one-shot commands: a broken connection fails at once (exit 4)."""
        return self.connect()

    def connect(self, *, reconnect: bool = False) -> Orchestrator:
        """The orchestrator for the resolved broker, built on first use; a bad URL exits 2.

        One-shot commands do not retry a broken connection (a retried publish may send a job
        twice, and an operator can simply run the command again); ``reconnect=True`` keeps the
        library's retries, for the long-running worker.
        """
        if self._orchestrator is None:
            # Imported here: --help, --version and shell completion need no broker client.
            from ..clients import client_from_url
            from ..orchestrator import Orchestrator

            settings, source = resolve_broker(self._broker, self._config)
            options = settings.client_options()
            if self.connect_timeout is not None:
                options["connect_timeout"] = self.connect_timeout
            try:
                client = client_from_url(settings.url, **options)
            except ValueError as exc:
                raise click.BadParameter(
                    mask_passwords(str(exc)), param_hint=f"broker URL (from {source})"
                ) from None
            self._orchestrator = (
                Orchestrator(client) if reconnect else Orchestrator(client, connection_retries=0)
            )
            log.debug("broker %s (from %s)", client.url, source)
        return self._orchestrator

    def close(self) -> None:
        if self._orchestrator is not None:
            self._orchestrator.close()


pass_cli = click.make_pass_decorator(CliContext)


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(CliContext).output.json_mode = True  # type: ignore[union-attr]


def json_option(func: F) -> F:
    """``--json`` on a command, the same as the global ``mindtrace-jobs --json``."""
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Machine-readable JSON output.",
    )(func)


def queue_names_option(help_text: str) -> Callable[[F], F]:
    """``--queue/-q NAME`` (repeatable), passed as ``names``."""
    return click.option("--queue", "-q", "names", multiple=True, metavar="NAME", help=help_text)


def queue_type_option(help_text: str) -> Callable[[F], F]:
    """``--type/-t fifo|stack|priority`` (default fifo), passed as ``queue_type``."""
    return click.option(
        "--type",
        "-t",
        "queue_type",
        type=click.Choice([t.value for t in QueueType]),
        default=QueueType.FIFO.value,
        show_default=True,
        help=help_text,
    )


_INVALID_INPUT = (
    InvalidArgument,
    InvalidPriority,
    InvalidQueueName,
    JobEncodeError,
    MessageTooLarge,
    QueueArgumentsMismatch,
    QueueTypeMismatch,
    UnsupportedQueueType,
)
#: The library's hints that name a Python argument (a pattern), in the form the command line takes.
_AS_FLAGS = {
    r"raise connect_timeout": "raise --connect-timeout",
    r"raise confirm_timeout": "add ?confirm_timeout=SECONDS to the broker URL",
    r"pass force=True": "pass --force",
    r"queue_type='(\w+)'": r"--type \1",
    r"replicated=True \(mindtrace-jobs declare --replicated\)": "--replicated",
    r"replicated=True": "--replicated",
    r"if_empty=True": "--if-empty",
}


def _cli_error(exc: JobsError) -> CliError:
    """The command-line form of a library error, which decides the exit code: one line, hints
    in flag form."""
    if isinstance(exc, QueueNotFound):  # the library's hint names the Python API
        return QueueMissingError(
            f"queue {exc.queue_name!r} does not exist: "
            f"declare it with `mindtrace-jobs declare {exc.queue_name}`"
        )
    message = " ".join(str(exc).split())  # one line, whatever the broker's text holds
    for python, flag in _AS_FLAGS.items():
        message = re.sub(python, flag, message)
    if isinstance(exc, BrokerUnavailable):  # "... is unavailable (<reason>): ..."
        return BrokerDownError(message)
    if isinstance(exc, _INVALID_INPUT):
        return InvalidInputError(message)
    return CliError(message)


class JobsGroup(click.Group):
    """A group that lists commands in definition order and turns library errors into one masked
    line and a distinct exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        received: list[int] = []
        try:
            with _signals_exit(received):
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except JobsError as exc:
            _exit_if_signalled(received)
            _log_traceback()
            raise _cli_error(exc) from None
        except Exception as exc:  # noqa: BLE001 - anything else is still one line, not a traceback
            _exit_if_signalled(received)
            _log_traceback()
            hint = (
                ""
                if log.isEnabledFor(logging.DEBUG)
                else " (run with --log-level debug for the traceback)"
            )
            raise CliError(f"unexpected {type(exc).__name__}: {exc}{hint}") from None


#: Signals that end a command as Ctrl-C does: cleanups run (``dlq list`` gives the dead letters
#: back, ``bench`` deletes its scratch queue). The worker installs warm/cold handlers of its own.
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _signals_exit(received: list[int]) -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise ``SystemExit(128 + signal)`` in it; each
    signal is also appended to ``received``, for an exit code that a library's ``except`` turned
    into another error (pydantic's serializer does) cannot hide."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_now(signum: int, frame: object) -> None:
        received.append(signum)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, exit_now) for sig in _ENDING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_if_signalled(received: list[int]) -> None:
    """A signal ended the command, and a library turned its ``SystemExit`` into another error
    (pydantic's serializer does): exit as the signal asked."""
    if received:
        raise SystemExit(128 + received[0]) from None


def _log_traceback() -> None:
    if log.isEnabledFor(logging.DEBUG):
        sys.stderr.write(mask_passwords(traceback.format_exc()))


def import_object(spec: str, param_hint: str) -> Any:
    """Import ``module:attribute``; the current directory is importable, as with ``celery -A``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(
            f"{spec!r} is not MODULE:NAME (for example tasks:handle)", param_hint=param_hint
        )
    cwd_importable()
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot import {spec!r}: {exc}", param_hint=param_hint) from None
    return obj
