"""The one table that turns broker exceptions into this package's errors.

Every backend runs its broker calls inside :func:`translate_errors`; the first row whose
exception types match wins, so the most specific rows come first.

==========================================  ==========================================
broker exception                            raised
==========================================  ==========================================
py-amqp ``NotFound`` (404), ``NO_ROUTE``     ``QueueNotFound``
py-amqp ``PreconditionFailed`` (406)        ``QueueTypeMismatch``
connection, socket and timeout errors of     ``BrokerUnavailable``
redis-py, py-amqp and Kombu
==========================================  ==========================================

``QueueNotFound`` raised by a backend itself (the Redis and memory stores know their queues)
passes through unchanged.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Callable, Iterator

import amqp.exceptions
import kombu.exceptions
import redis.exceptions

from ..errors import BrokerUnavailable, QueueNotFound, QueueTypeMismatch

__all__ = ["CONNECTION_ERRORS", "translate_errors"]

_NO_ROUTE = 312  # basic.return for a mandatory publish to a queue that does not exist

#: Exceptions that mean the connection is broken or the broker unreachable.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    amqp.exceptions.ConnectionError,
    socket.timeout,
    OSError,
)


@contextmanager
def translate_errors(url: str, queue: str, on_channel_error: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Map broker exceptions raised in the block to this package's errors (``raise ... from``).

    Args:
        url: the broker URL, password masked, for :class:`BrokerUnavailable`.
        queue: the queue the operation was about, for the error message.
        on_channel_error: runs when the broker closed the channel (a 404 or 406 on RabbitMQ)
            or the connection broke, so the caller can drop it.
    """
    try:
        yield
    except amqp.exceptions.NotFound as exc:
        on_channel_error()
        raise QueueNotFound(queue) from exc
    except amqp.exceptions.PreconditionFailed as exc:
        on_channel_error()
        raise QueueTypeMismatch(queue, "another type", f"what was requested ({exc.reply_text})") from exc
    except amqp.exceptions.ChannelError as exc:
        if exc.reply_code == _NO_ROUTE:
            raise QueueNotFound(queue) from exc
        on_channel_error()
        raise
    except CONNECTION_ERRORS as exc:
        on_channel_error()
        raise BrokerUnavailable(url, f"{type(exc).__name__}: {exc}") from exc
