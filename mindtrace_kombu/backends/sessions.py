"""Sessions: a Kombu connection and its channel, borrowed per operation from a pool.

Kombu connections and channels are not thread-safe. A thread borrows a session for one
operation (``with pool.session() as session:``) and gives it back when the operation ends. The
pool keeps at most ``max_idle`` idle sessions and closes the others, so a program whose 50
threads each published once holds ``max_idle`` connections, not 50 (and does not exhaust a
Celery app's connection pool). A session whose connection broke is discarded (:meth:`discard`),
not given back, and closed without a word to the broker (a silent connection would never answer
a close). :meth:`hold` keeps a session out of the pool after the operation (a message fetched
with ``basic.get`` and not yet acknowledged lives on its channel) until :meth:`release`.

Heartbeats: with ``keepalive``, a daemon thread visits the sessions nobody is using (idle and
held ones) every ``keepalive`` seconds: it reads what the broker sent and sends a heartbeat when
one is due, so the broker keeps them while they wait, and a connection that went silent is
found and dropped.

Round trips: borrowing an idle session costs none; a new one costs the connection's TCP and
AMQP handshake on first use, plus ``channel.open`` (the channel is opened lazily, and again
after the broker closed it for good). Heartbeats are one frame each way, not a round trip.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Generic, Protocol, TypeVar

import kombu

__all__ = ["KombuSession", "SessionPool"]


class _Session(Protocol):
    def close(self) -> None: ...

    def abandon(self) -> None: ...

    def keep_alive(self) -> bool: ...


class _Channel(Protocol):
    @property
    def is_open(self) -> bool: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=_Session)
C = TypeVar("C", bound=_Channel)


class KombuSession(Generic[C]):
    """A Kombu connection and a channel on it, opened on first use by ``open_channel``.

    ``lock`` serialises the session's users: the thread that borrowed it, a thread that
    settles a message held on it, and the pool's heartbeats. The broker may close the channel;
    :attr:`channel` then opens a new one. ``error`` is what :meth:`keep_alive` found broken.
    """

    def __init__(self, connection: kombu.Connection, open_channel: Callable[[kombu.Connection], C]) -> None:
        self.connection = connection
        self.lock = threading.Lock()
        self.closed = False
        self.error: Exception | None = None
        self._open_channel = open_channel
        self._channel: C | None = None

    @property
    def channel(self) -> C:
        """The session's channel, (re)opened when it is not open."""
        if self._channel is None or not self._channel.is_open:
            self._channel = self._open_channel(self.connection)
        return self._channel

    def keep_alive(self) -> bool:
        """Between operations: dispatch what the broker sent (heartbeats, a close) without
        waiting, and send a heartbeat when one is due. False once the connection is broken
        (``error`` says how); a session in use or not connected is left alone."""
        if not self.lock.acquire(blocking=False):
            return True
        try:
            if self.error is None and not self.closed and self.connection.connected:
                try:
                    while True:
                        self.connection.drain_events(timeout=0)
                except TimeoutError:
                    self.connection.heartbeat_check()
        except Exception as exc:  # noqa: BLE001 - any failure leaves the connection unusable
            self.error = exc
        finally:
            self.lock.release()
        return self.error is None

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

    def abandon(self) -> None:
        """Close the socket without a word to the broker (its connection is broken: a close
        would wait for an answer that never comes); the broker requeues what it held."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self._channel = None
                with suppress(Exception):
                    self.connection.collect()
                    self.connection.release()  # a pool's connection goes back to it, to reconnect


class SessionPool(Generic[S]):
    """Sessions made by ``factory``, lent one operation at a time; thread-safe.

    Args:
        factory: makes a new session (need not connect yet).
        max_idle: idle sessions kept for reuse; the others are closed when given back.
        keepalive: seconds between two :meth:`keep_alive` visits of the sessions not in use
            (half the heartbeat interval); None: no heartbeats.
    """

    def __init__(self, factory: Callable[[], S], *, max_idle: int = 4, keepalive: float | None = None) -> None:
        self._factory = factory
        self._max_idle = max_idle
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._live: set[S] = set()  # made and not closed: idle, borrowed or held
        self._idle: list[S] = []
        self._held: set[S] = set()
        self._broken: set[S] = set()
        self._stop: threading.Event | None = None  # set to stop the heartbeat thread

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
            broken = session in self._broken
            keep = session in self._live and not broken and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(session)
            else:
                self._live.discard(session)
                self._broken.discard(session)
        if not keep:
            (session.abandon if broken else session.close)()

    def close(self) -> None:
        """Close every session: idle, borrowed and held ones (given back later, they are
        closed again, which does nothing). The pool stays usable."""
        with self._lock:
            sessions, self._live = self._live, set()
            broken = set(self._broken)
            self._idle.clear()
            self._held.clear()
            self._broken.clear()
            stop, self._stop = self._stop, None
        if stop is not None:
            stop.set()
        for session in sessions:
            (session.abandon if session in broken else session.close)()

    def _borrow(self) -> S:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._keepalive and self._stop is None:
                self._stop = threading.Event()
                threading.Thread(
                    target=self._keep_alive, args=(self._stop, self._keepalive), name="mindtrace-heartbeats", daemon=True
                ).start()
        session = self._factory()
        with self._lock:
            self._live.add(session)
        return session

    def _keep_alive(self, stop: threading.Event, interval: float) -> None:
        """Visit the idle and held sessions every ``interval`` seconds until ``stop``; drop the
        idle ones whose connection broke (a held one is dropped when it is settled)."""
        while not stop.wait(interval):
            with self._lock:
                sessions = [*self._idle, *self._held]
            for session in sessions:
                if session.keep_alive():
                    continue
                with self._lock:
                    idle = session in self._idle
                    if idle:
                        self._idle.remove(session)
                        self._live.discard(session)
                    else:
                        self._broken.add(session)
                if idle:
                    session.abandon()
