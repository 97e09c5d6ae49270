"""Checks of numeric arguments, run before any broker call: a bad number raises
:class:`~.errors.InvalidArgument` instead of hanging (``timeout=nan``) or reaching the broker."""

from __future__ import annotations

import math

from .errors import InvalidArgument

__all__ = ["check_count", "check_flag", "check_seconds", "check_time_limit", "check_timeout"]


def check_seconds(name: str, value: float) -> float:
    """``value`` as seconds: a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidArgument(name, value, "a timeout is a finite number of seconds >= 0")
    return float(value)


def check_timeout(name: str, value: float | None) -> float | None:
    """:func:`check_seconds`, or None for no timeout."""
    return None if value is None else check_seconds(name, value)


def check_time_limit(value: float | None) -> float | None:
    """A time limit: a finite number of seconds > 0, or None for none."""
    seconds = check_timeout("time_limit", value)
    if seconds == 0:
        raise InvalidArgument("time_limit", value, "a time limit is a finite number of seconds > 0, or None")
    return seconds


def check_count(name: str, value: int, *, minimum: int = 1) -> int:
    """``value`` as a count: an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(name, value, f"it must be an int >= {minimum}")
    return value


def check_flag(name: str, value: bool | None) -> bool | None:
    """``value`` as an on/off option: True, False, or None for the default."""
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(name, value, "it must be True, False or None")
    return value
