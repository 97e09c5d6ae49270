"""The HTML building blocks every page shares; every value goes through :func:`text`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import urlencode

from .assets import STYLESHEET_PATH
from .security import CSRF_FIELD

__all__ = ["NAVIGATION", "csrf_field", "href", "link", "number", "page", "table", "text"]

_ACTIVE = ' class="active"'
#: (path, label) of the pages in the header.
NAVIGATION = (("/queues", "Queues"), ("/workers", "Workers"), ("/jobs", "Job look-up"), ("/dead-letters", "Dead letters"))


def text(value: object) -> str:
    """``value`` escaped for HTML; None (not reported by the broker) is "-"."""
    return "-" if value is None else escape(str(value))


def number(value: float | None, unit: str = "") -> str:
    """A right-aligned table cell for a count or a rate."""
    shown = "-" if value is None else f"{value:.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"
    return f'<td class="num">{escape(shown)}</td>'


def href(path: str, **query: object) -> str:
    """``path`` with a URL-encoded query (escape it for an attribute: :func:`text`)."""
    return f"{path}?{urlencode({key: str(value) for key, value in query.items()})}" if query else path


def link(path: str, label: object, **query: object) -> str:
    """An ``<a>`` to ``path`` with a URL-encoded query."""
    return f'<a href="{text(href(path, **query))}">{text(label)}</a>'


def csrf_field(token: str) -> str:
    """The hidden field that repeats the session's CSRF cookie in a form."""
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(token)}">'


def table(headers: Sequence[str], rows: Iterable[str], empty: str) -> str:
    """A table of pre-rendered ``<td>`` rows; ``empty`` (text) when there are none."""
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{text(empty)}</p>'
    head = "".join(f"<th>{text(header)}</th>" for header in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _navigation(active: str | None, broker: str) -> str:
    links = "".join(
        f'<a href="{path}"{_ACTIVE if path == active else ""}>{text(label)}</a>' for path, label in NAVIGATION
    )
    return f'{links}<span class="broker">{text(broker)}</span>'


def page(title: str, body: str, *, active: str | None, broker: str | None, refresh: int | None = None) -> str:
    """A whole page: the header with the navigation (``active`` highlighted) and the broker, or
    neither when ``broker`` is None (pages shown before signing in), and ``body``; ``refresh``
    reloads it every so many seconds."""
    nav = "" if broker is None else _navigation(active, broker)
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{meta}<title>{text(title)} - mindtrace jobs</title>'
        f'<link rel="stylesheet" href="{STYLESHEET_PATH}"></head>'
        f'<body><header><strong>mindtrace jobs</strong>{nav}</header>'
        f"<main><h1>{text(title)}</h1>{body}</main></body></html>"
    )
