"""Exchange bindings of the ``mindtrace-redis`` channel (:mod:`mindtrace_kombu.transport.redis`).

Kombu's Redis channel keeps each exchange's bindings in a set ``_kombu.binding.<exchange>``, with
a deadline set and a sweep for the tables of queues with ``x-expires``. Here the table is the
sorted set ``namespace.binding(exchange)``: each member (Kombu's: routing key, pattern, queue)
scored by its own deadline, ``+inf`` for a queue without ``x-expires``. Expired members are
dropped whenever the table is read or bound to, so nothing needs a sweep.
"""

from __future__ import annotations

from functools import cached_property
from time import monotonic
from typing import Any, Sequence

from kombu.utils.encoding import bytes_to_str
from redis.exceptions import NoScriptError

from ..redis_store.scripts import load

__all__ = ["BindingsMixin"]

_BIND = load("bind")
_TABLE = load("bindings")


class BindingsMixin:
    """Bindings in the channel's namespace; mix in before Kombu's Redis channel. The attributes
    below are the channel's (Kombu's and :class:`~mindtrace_kombu.transport.redis.Channel`'s)."""

    _binding_expiry_refreshed_at: float  # Kombu's: when bindings were last renewed
    store: Any
    namespace: Any
    state: Any
    auto_delete_queues: set[str]
    sep: str
    _expires: dict[str, int]
    _active_queues: list[str]
    _fanout_queues: dict[str, tuple[str, str]]
    typeof: Any
    _binding_ttl: Any
    _touch: Any

    def _bindings_of(self, queues: Sequence[str]) -> list[tuple[str, str, str]]:
        """``(queue, exchange, member)`` of the bindings this process made for ``queues``; a
        member is Kombu's: routing key, pattern and queue."""
        return [(queue, exchange, self._member(queue, exchange, key, args))
                for queue in queues for exchange, key, args in self.state.queue_bindings(queue)]

    def _member(self, queue: str, exchange: str, routing_key: str, arguments: Any) -> str:
        key, pattern, _ = self.typeof(exchange).prepare_bind(queue, exchange, routing_key, arguments)
        return str(self.sep.join([key or "", pattern or "", queue]))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        """Record the binding in ``namespace.binding(exchange)``; one of a queue with
        ``x-expires`` expires with the queue. Replaces Kombu's ``_kombu.binding.*`` sets."""
        if self.typeof(exchange).type == "fanout":
            self._fanout_queues[queue] = (exchange, routing_key.replace("#", "*"))
        self._bind([(queue, exchange, self.sep.join([routing_key or "", pattern or "", queue]))])

    def _bind(self, bindings: Sequence[tuple[str, str, str]]) -> None:
        """Add or renew ``(queue, exchange, member)`` bindings: one pipeline."""
        with self.store.client.pipeline(transaction=False) as pipe:
            for queue, exchange, member in bindings:
                lifetime = self._binding_ttl(queue) if queue in self._expires else ""
                _BIND.queue_on(pipe, [self.namespace.binding(exchange)], [member, lifetime])
            try:
                pipe.execute()
            except NoScriptError:
                self.store.client.script_load(_BIND.source)
                self._bind(bindings)

    def get_table(self, exchange: str) -> list[tuple[str, ...]]:
        """The bindings of ``exchange`` (expired ones dropped); Kombu's reads its own set."""
        members = _TABLE(self.store.client, [self.namespace.binding(exchange)], ())
        return [tuple(bytes_to_str(member).split(self.sep)) for member in members]

    def queue_unbind(self, queue: str, exchange: str, routing_key: str = "", arguments: Any = None,
                     **kwargs: Any) -> None:
        """Remove the binding here and in Redis; Kombu's forgets it in this process only."""
        self.state.binding_delete(queue, exchange, routing_key)
        self.store.client.zrem(self.namespace.binding(exchange), self._member(queue, exchange, routing_key, arguments))

    def maybe_refresh_binding_expiry(self) -> None:
        """Kombu's hook, run each second by the event loop and on each poll of
        ``drain_events``: every third of their ``x-expires``, renew the queues this channel
        consumes and their bindings for the bindings' lifetime (Kombu's: x-expires x 2, at
        least an hour). Replaces Kombu's deadline set and sweep."""
        queues = [queue for queue in dict.fromkeys(self._active_queues) if queue in self._expires]
        if not queues:
            return
        now = monotonic()
        if now - self._binding_expiry_refreshed_at < min(self._expires[queue] for queue in queues) / 3000:
            return
        self._binding_expiry_refreshed_at = now
        for queue in queues:
            self._touch(queue)
        self._bind(self._bindings_of(queues))

    def sweep_bindings(self, limit: int = 100) -> int:
        """Nothing to sweep: expired binding members are dropped whenever their table is read or
        bound to. Replaces Kombu's sweep of its ``_kombu.binding_deadlines`` set."""
        return 0

    def _forget_bindings(self, queue: str) -> None:
        """Remove the bindings this process made for ``queue``, here and in Redis (and no
        longer auto-delete it: it is gone)."""
        self.auto_delete_queues.discard(queue)
        bindings = self._bindings_of([queue])
        if bindings:
            with self.store.client.pipeline(transaction=False) as pipe:
                for _, exchange, member in bindings:
                    pipe.zrem(self.namespace.binding(exchange), member)
                pipe.execute()
        self.state.queue_bindings_delete(queue)

    def _unbind_missing(self, exchange: str, queue: str) -> None:
        """Drop the bindings of ``exchange`` to ``queue``, which no longer exists."""
        key = self.namespace.binding(exchange)
        stale = [m for m in self.store.client.zrange(key, 0, -1) if bytes_to_str(m).split(self.sep)[-1] == queue]
        if stale:
            self.store.client.zrem(key, *stale)
