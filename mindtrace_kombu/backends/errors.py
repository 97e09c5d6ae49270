"""The one table that turns broker and client exceptions into this package's errors.

Every backend runs its broker calls, connecting and settling included, inside
:func:`translate_errors`. The rows are tried in order; the first that matches wins. "In the
chain" means a connection error or one it was raised from (``__cause__``, ``__context__``):
Kombu and redis-py wrap the socket error that says why.

=================================================  =================================================
broker or client exception                         raised
=================================================  =================================================
this package's errors (the stores raise            unchanged
``QueueNotFound``, ``QueueNotEmpty`` themselves)
:class:`~..transport.amqp.ConfirmTimeout`          ``PublishNotConfirmed`` (reason ``timeout``)
py-amqp ``MessageNacked``                          ``PublishRejected``
in the chain, a reason (first match):              ``BrokerUnavailable(reason=...)``
  AMQP 403 on the handshake, redis-py                ``auth``
  ``AuthenticationError``/``AuthorizationError``
  AMQP 530 on ``connection.open``                    ``vhost``
  redis-py ``ReadOnlyError`` (a replica)             ``read-only``
  redis-py "DB index is out of range"                ``database``
  py-amqp "Too many heartbeats missed"               ``heartbeat``
  ``ConnectionRefusedError``                         ``refused``
  ``socket.gaierror``                                ``dns``
  ``ssl.SSLError``                                   ``tls``
  ``TimeoutError``, redis-py ``TimeoutError``        ``timeout``
  ``ENETUNREACH``, ``EHOSTUNREACH``                  ``unreachable``
  redis-py ``ClusterDownError``, ``TryAgainError``,  ``failover``
  ``MasterDownError`` (a Redis Cluster failing over)
AMQP 404 ``NOT_FOUND``, 312 ``NO_ROUTE``           ``QueueNotFound``
AMQP 406 "inequivalent arg 'x-max-priority'" or    ``QueueTypeMismatch``
"inequivalent arg 'x-queue-type'"
AMQP 406 "inequivalent arg '<other>'"              ``QueueArgumentsMismatch``
AMQP 406 "message size ... larger than ..."        ``MessageTooLarge``
AMQP 403 on a channel, redis-py ``NoPermission``   ``PermissionDenied``
any other connection error (py-amqp, redis-py,     ``BrokerUnavailable``: ``closed`` when the
Kombu ``OperationalError``, ``OSError``; redis-py   connection was closed or reset, else ``error``
"Redis Cluster cannot be connected")
any other error of py-amqp, redis-py or Kombu      ``BrokerError`` (quotes it)
=================================================  =================================================

Anything else (a ``TypeError``...) is a bug and passes unchanged.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import amqp.exceptions
import kombu.exceptions
import redis.exceptions

from ..errors import (
    BrokerError,
    BrokerUnavailable,
    JobsError,
    MessageTooLarge,
    PermissionDenied,
    PublishNotConfirmed,
    PublishNotReplicated,
    PublishRejected,
    QueueArgumentsMismatch,
    QueueNotFound,
    QueueTypeMismatch,
)
from ..queues import PRIORITY_ARGUMENT, QUEUE_TYPE_ARGUMENT
from ..redis_store import NotReplicated
from ..transport.amqp import ConfirmTimeout

__all__ = ["CONNECTION_ERRORS", "broker_error", "translate_errors"]

_NO_ROUTE = 312  # basic.return for a mandatory publish to a queue that does not exist
_HANDSHAKE = (0, 10)  # AMQP method classes of a connection's own errors: none yet, connection.*
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")
_TYPE_ARGUMENTS = (PRIORITY_ARGUMENT, QUEUE_TYPE_ARGUMENT)  # a 406 on these: the queue has another type

#: Exceptions that mean the connection is broken or the broker unreachable.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    amqp.exceptions.ConnectionError,
    OSError,  # socket errors, socket.timeout
)
_CLOSED = (ConnectionError, amqp.exceptions.ConnectionError, redis.exceptions.ConnectionError)
_LIBRARY_ERRORS = (
    amqp.exceptions.AMQPError, redis.exceptions.RedisError, redis.exceptions.RedisClusterException,
    kombu.exceptions.KombuError,
)
#: A Redis Cluster between a master's failure and its replica's promotion.
_FAILING_OVER = (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError, redis.exceptions.MasterDownError)


def _is_connection_error(exc: BaseException) -> bool:
    """The connection is broken or the broker unreachable (redis-py's cluster client says that
    no node answers with a ``RedisClusterException`` of its own)."""
    return isinstance(exc, CONNECTION_ERRORS) or (
        isinstance(exc, redis.exceptions.RedisClusterException) and "cannot be connected" in str(exc)
    )


@contextmanager
def translate_errors(
    url: str, queue: str, on_channel_error: Callable[[JobsError], None] = lambda error: None
) -> Iterator[None]:
    """Map broker exceptions raised in the block to this package's errors (``raise ... from``).

    Args:
        url: the broker URL, password masked, for :class:`BrokerUnavailable`.
        queue: the queue the operation was about, for the error message.
        on_channel_error: called with the error when the broker closed the channel (an AMQP
            channel error) or the connection broke, so the caller can drop it.
    """
    try:
        yield
    except JobsError:
        raise
    except Exception as exc:
        error = broker_error(exc, url, queue)
        if error is None:
            raise
        if isinstance(error, BrokerUnavailable) or _closes_channel(exc):
            on_channel_error(error)
        raise error from exc


def broker_error(exc: BaseException, url: str, queue: str) -> JobsError | None:
    """The table's error for ``exc`` (see the module docstring), or None when it is not a
    broker or client exception."""
    if isinstance(exc, ConfirmTimeout):
        return PublishNotConfirmed(url, queue, exc.unconfirmed, exc.waited)
    if isinstance(exc, NotReplicated):
        return PublishNotReplicated(url, queue, exc.count, exc.acknowledged, exc.wanted, exc.timeout)
    if isinstance(exc, amqp.exceptions.MessageNacked):
        return PublishRejected(queue, getattr(exc, "refused", 1), getattr(exc, "total", 1))
    chain = list(_chain(exc)) if _is_connection_error(exc) else [exc]
    reason = next((found for link in chain if (found := _reason(link)) is not None), None)
    if reason is not None:
        return BrokerUnavailable(url, _describe(exc), reason)
    if isinstance(exc, amqp.exceptions.ChannelError):
        return _channel_error(exc, queue)
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return PermissionDenied(queue, _describe(exc))
    if _is_connection_error(exc):
        closed = any(isinstance(link, _CLOSED) or "closed" in str(link) for link in chain)
        return BrokerUnavailable(url, _describe(exc), "closed" if closed else "error")
    if isinstance(exc, _LIBRARY_ERRORS):
        return BrokerError(queue, _describe(exc))
    return None


def _reason(exc: BaseException) -> str | None:
    """The :class:`BrokerUnavailable` reason ``exc`` itself says, if any."""
    on_handshake = isinstance(exc, amqp.exceptions.AMQPError) and (exc.method_sig or (0, 0))[0] in _HANDSHAKE
    if isinstance(exc, amqp.exceptions.AccessRefused) and on_handshake or isinstance(
        exc, (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
    ):
        return "auth"
    if isinstance(exc, amqp.exceptions.NotAllowed) and on_handshake:
        return "vhost"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "read-only"
    if isinstance(exc, redis.exceptions.ResponseError) and "DB index is out of range" in str(exc):
        return "database"
    if isinstance(exc, amqp.exceptions.ConnectionForced) and "heartbeat" in str(exc):
        return "heartbeat"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, (TimeoutError, redis.exceptions.TimeoutError)):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    if isinstance(exc, _FAILING_OVER):
        return "failover"
    return None


def _channel_error(exc: amqp.exceptions.ChannelError, queue: str) -> JobsError:
    """An AMQP channel error (or ``basic.return``) of an operation on ``queue``."""
    text = str(exc.reply_text or exc)
    if exc.reply_code in (_NO_ROUTE, 404):
        return QueueNotFound(queue)
    if exc.reply_code == 403:
        return PermissionDenied(queue, text)
    if exc.reply_code == 406:
        if found := _INEQUIVALENT.search(text):
            if found.group(1) in _TYPE_ARGUMENTS:
                return QueueTypeMismatch(queue, "another type", f"what was requested ({text})")
            return QueueArgumentsMismatch(queue, found.group(1), text)
        if "message size" in text:
            return MessageTooLarge(queue, text)
    return BrokerError(queue, _describe(exc))


def _closes_channel(exc: BaseException) -> bool:
    return isinstance(exc, amqp.exceptions.ChannelError) and exc.reply_code != _NO_ROUTE


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then the exceptions it was raised from or during, innermost last."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
