"""Sessions: a Kombu connection and its channel, borrowed per operation from a pool.

Kombu connections and channels are not thread-safe. A thread borrows a session for one
operation (``with pool.session() as session:``) and gives it back when the operation ends. The
pool keeps at most ``max_idle`` idle sessions and closes the others, so a program whose 50
threads each published once holds ``max_idle`` connections, not 50 (and does not exhaust a
Celery app's connection pool). A session whose connection broke is discarded (:meth:`discard`),
not given back. :meth:`hold` keeps a session out of the pool after the operation (a message
fetched with ``basic.get`` and not yet acknowledged lives on its channel) until
:meth:`release`.

Round trips: borrowing an idle session costs none; a new one costs the connection's TCP and
AMQP handshake on first use, plus ``channel.open`` (the channel is opened lazily, and again
after the broker closed it for good).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, suppress
from typing import Callable, Generic, Iterator, Protocol, TypeVar

import kombu

__all__ = ["KombuSession", "SessionPool"]


class _Closeable(Protocol):
    def close(self) -> None: ...


class _Channel(Protocol):
    @property
    def is_open(self) -> bool: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=_Closeable)
C = TypeVar("C", bound=_Channel)


class KombuSession(Generic[C]):
    """A Kombu connection and a channel on it, opened on first use by ``open_channel``.

    ``lock`` serialises the session's users: the thread that borrowed it, and a thread that
    settles a message held on it. The broker may close the channel; :attr:`channel` then opens
    a new one.
    """

    def __init__(self, connection: kombu.Connection, open_channel: Callable[[kombu.Connection], C]) -> None:
        self.connection = connection
        self.lock = threading.Lock()
        self.closed = False
        self._open_channel = open_channel
        self._channel: C | None = None

    @property
    def channel(self) -> C:
        """The session's channel, (re)opened when it is not open."""
        if self._channel is None or not self._channel.is_open:
            self._channel = self._open_channel(self.connection)
        return self._channel

    def close(self) -> None:
        """Close the channel (the broker requeues what it holds unacknowledged) and release
        the connection; idempotent, never raises."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            channel, self._channel = self._channel, None
            with suppress(Exception):  # the connection may be broken already
                if channel is not None:
                    channel.close()
            with suppress(Exception):
                self.connection.release()


class SessionPool(Generic[S]):
    """Sessions made by ``factory``, lent one operation at a time; thread-safe.

    Args:
        factory: makes a new session (need not connect yet).
        max_idle: idle sessions kept for reuse; the others are closed when given back.
    """

    def __init__(self, factory: Callable[[], S], *, max_idle: int = 4) -> None:
        self._factory = factory
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._live: set[S] = set()  # made and not closed: idle, borrowed or held
        self._idle: list[S] = []
        self._held: set[S] = set()
        self._broken: set[S] = set()

    @contextmanager
    def session(self) -> Iterator[S]:
        """Borrow a session for the block; it is given back at the end unless held."""
        session = self._borrow()
        try:
            yield session
        finally:
            with self._lock:
                held = session in self._held
            if not held:
                self.release(session)

    def hold(self, session: S) -> None:
        """Keep the borrowed ``session`` out of the pool after its block, until :meth:`release`."""
        with self._lock:
            self._held.add(session)

    def discard(self, session: S) -> None:
        """Its connection broke: close ``session`` when given back instead of reusing it."""
        with self._lock:
            self._broken.add(session)

    def release(self, session: S) -> None:
        """Give ``session`` back: kept idle if it is sound and fewer than ``max_idle`` are idle,
        else closed."""
        with self._lock:
            self._held.discard(session)
            keep = session in self._live and session not in self._broken and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(session)
            else:
                self._live.discard(session)
                self._broken.discard(session)
        if not keep:
            session.close()

    def close(self) -> None:
        """Close every session: idle, borrowed and held ones (given back later, they are
        closed again, which does nothing). The pool stays usable."""
        with self._lock:
            sessions, self._live = self._live, set()
            self._idle.clear()
            self._held.clear()
            self._broken.clear()
        for session in sessions:
            session.close()

    def _borrow(self) -> S:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        session = self._factory()
        with self._lock:
            self._live.add(session)
        return session
