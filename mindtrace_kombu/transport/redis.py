"""Kombu transport ``mindtrace-redis``: Kombu's Redis transport over this package's Redis store.

Kombu's Redis channel keeps everything that is not a queue: fanout over pub/sub, exchange
bindings, the event-loop registration (``MultiChannelPoller``, used by Celery), connection
parameters and health checks, ``Producer.batch()``. The queues are
:class:`~mindtrace_kombu.redis_store.RedisStore` queues, shared with the package's Redis backend,
and every delivery is held under the channel's :class:`~mindtrace_kombu.redis_store.Lease`.

Features
========
* Type: Virtual
* Supports Direct: Yes
* Supports Topic: Yes
* Supports Fanout: Yes (pub/sub, as Kombu's Redis transport)
* Supports Priority: Yes, exact and higher first (``Queue(max_priority=N)``), capped at ``N``
* Supports Queue TTL: Yes (``x-expires``, ``Queue(expires=...)``)
* Supports Message TTL: No
* Queue types: fifo (no arguments), priority (``x-max-priority``), stack
  (``x-mindtrace-queue-type: stack``)

Connection String
=================
``mindtrace-redis://[USER:PASSWORD@]REDIS_ADDRESS[:PORT][/DB]``, or Celery's
``broker_transport = "mindtrace-redis"`` with an ordinary ``redis://`` URL (``rediss://`` for
TLS). Sentinel: :mod:`mindtrace_kombu.transport.sentinel`. Kombu refuses query parameters it
does not know (``TypeError``) instead of passing them to the transport, so this transport's
options go in ``transport_options`` (Celery: ``broker_transport_options``).

Transport Options
=================
* ``lease_timeout``: (float) seconds before the messages held by a channel that stopped
  renewing its lease (its process died) return to their queues. Default 30
  (``redis_store.DEFAULT_LEASE_TIMEOUT``); a live channel renews every third of it from a
  daemon thread, however long a message stays unacknowledged.
* ``prefix``: (str) this package's key prefix, after ``global_keyprefix``. Default
  ``mindtrace``.
* ``global_keyprefix``: (str) Kombu's: prepended to every key and pub/sub channel.
* Kombu's connection options: ``socket_timeout``, ``socket_connect_timeout``,
  ``socket_keepalive``, ``socket_keepalive_options``, ``health_check_interval``,
  ``retry_on_timeout`` (which turns ``Producer.batch()`` into immediate publishes),
  ``max_connections``, ``client_name``, ``reauth_check_interval``; and ``fanout_patterns``,
  ``queue_order_strategy``, ``polling_interval`` (the BRPOP timeout).
* Ignored, since there is no unacked hash and no visibility timeout: ``ack_emulation``,
  ``visibility_timeout``, ``unacked_*``, ``priority_steps``, ``sep`` (only inside binding
  members), ``fanout_prefix`` (fanout channels are namespaced).

Keys
====
Every key and pub/sub channel comes from :class:`~mindtrace_kombu.redis_store.Namespace`
(``global_keyprefix`` + ``prefix``; layout in :mod:`mindtrace_kombu.redis_store.keys`): queue
data, the wake-up lists BRPOP waits on, ``binding(exchange)`` (a sorted set of Kombu's binding
members, scored by their deadline, ``+inf`` for queues without ``x-expires``) and
``fanout(exchange)``. Two ``global_keyprefix`` tenants on one database share nothing, and any
queue name (``mindtrace.unacked``, ``_kombu.binding.x``) is an ordinary queue.

Differences from Kombu's Redis transport
========================================
* Priorities are exact and higher first (Kombu's: 4 steps, lower first).
* Re-declaring a queue with another spec raises py-amqp's ``PreconditionFailed`` (406); a
  primitive on an undeclared queue, or a publish to one through the default exchange, raises
  its ``NotFound`` (404). Through a named exchange, a binding whose queue is gone is dropped.
* ``queue_delete`` deletes by name, whoever declared the queue, with the bindings this process
  knows; ``if_empty`` keeps a queue holding ready or unacknowledged messages.
* No visibility timeout: a message stays unacknowledged as long as its channel lives. A closed
  channel's messages, and rejected ones with ``requeue``, go back first in line, in order.
* A queue that a channel consumes lives, with its bindings, as long as the bindings (Kombu's
  ``x-expires`` x 2, at least an hour), renewed while the channel runs; ``x-expires`` from the
  last declare, publish, get or cancel otherwise.
* Stored data that is not a Kombu message is delivered as content type
  ``application/x-mindtrace-unparseable`` (its bytes base64-encoded) to be dead-lettered.
* Per message: BRPOP returns a wake-up token on Kombu's pinned connection, and the message is
  taken in one script call on a pooled connection (nothing else ever shares the BRPOP
  connection); an acknowledgement is one script call.
"""

from __future__ import annotations

import logging
from functools import cached_property
from queue import Empty
from time import monotonic
from typing import Any, Sequence

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps

from ..backends.wire import MalformedPayload, read_payload
from ..errors import QueueNotFound
from ..queues import QueueSpec
from ..redis_store import DEFAULT_LEASE_TIMEOUT, DEFAULT_PREFIX, Lease, Namespace, RedisStore, Stored
from .base import ExactOrderChannelMixin, not_found_as_404, queue_not_found, unparseable_message
from .redis_bindings import BindingsMixin
from .redis_qos import IN_FLIGHT, PublishBatch, QoS
from .redis_registry import ChannelAnnouncer

__all__ = ["Channel", "QoS", "Transport"]

logger = logging.getLogger(__name__)

#: ``basic_publish`` keyword passed down to ``_put``: the named exchange a message is routed by.
_EXCHANGE = "_mindtrace_exchange"



class Channel(BindingsMixin, ExactOrderChannelMixin, kombu_redis.Channel):  # type: ignore[misc]
    """Kombu's Redis channel whose queues are the store's, delivered under the channel's lease.

    Nothing is ever sent on the connection Kombu pins for BRPOP but BRPOP itself: the store's
    client borrows a pooled connection for each command.
    """

    QoS = QoS
    #: This package's key prefix, after Kombu's ``global_keyprefix``.
    prefix = DEFAULT_PREFIX
    #: Seconds before the messages of a channel that stopped renewing its lease return.
    lease_timeout = DEFAULT_LEASE_TIMEOUT

    from_transport_options = kombu_redis.Channel.from_transport_options + ("prefix", "lease_timeout")

    _brpop_turn = 0  # counts BRPOPs: on Redis Cluster, which slot's queues the next one waits on
    _brpop_queues: Sequence[str] = ()  # the queues the pending BRPOP waits on

    @cached_property
    def namespace(self) -> Namespace:
        """Where every key and pub/sub channel lives."""
        return Namespace(self.global_keyprefix or "", self.prefix)

    @cached_property
    def store(self) -> RedisStore:
        """The queues, on a client of the channel's (non-pinned) connection pool."""
        return RedisStore(self._create_client(), self.namespace, lease_timeout=float(self.lease_timeout))

    @cached_property
    def lease(self) -> Lease:
        """What this channel holds in flight; a heartbeat renews it while the channel lives."""
        return Lease(self.store)

    def _get_client(self) -> Any:
        """Kombu's client class without its key prefixing: every key comes from
        :attr:`namespace`, which holds ``global_keyprefix`` already."""
        super()._get_client()  # Kombu's redis-py version check
        return redis.Redis

    # -- specs -------------------------------------------------------------------------------

    def _store_spec(self, spec: QueueSpec) -> QueueSpec:
        return self.store.declare(spec)

    def queue_spec(self, queue: str) -> QueueSpec | None:
        return self.store.spec(queue)

    # -- queues ------------------------------------------------------------------------------

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        super()._new_queue(queue, **kwargs)
        self._touch(queue)

    def _touch(self, queue: str) -> None:
        """Renew ``queue``'s keys for its ``x-expires`` (for its bindings' lifetime while this
        channel consumes it); nothing for a queue without one."""
        expires = self._expires.get(queue)
        if expires is not None:
            self.store.expire(queue, self._binding_ttl(queue) if queue in self._active_queues else expires)

    def _size(self, queue: str) -> int:
        with not_found_as_404(queue):
            return self.store.count(queue)

    def _purge(self, queue: str) -> int:
        with not_found_as_404(queue):
            return self.store.purge(queue)

    def _delete(self, queue: str, *args: Any, if_empty: bool = False, **kwargs: Any) -> None:
        self.store.delete(queue, if_empty=if_empty)

    # -- publishing --------------------------------------------------------------------------

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> Any:
        """Kombu's, except that through a named exchange a bound queue that no longer exists
        (deleted or expired elsewhere) loses its binding instead of failing the publish with
        404, as RabbitMQ deletes a queue's bindings with it. The default exchange still
        raises 404 for a missing queue."""
        if exchange:
            kwargs[_EXCHANGE] = exchange
        return super().basic_publish(message, exchange, routing_key, **kwargs)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Store ``message`` with its priority (exact, higher first, capped at the queue's
        ``x-max-priority``; ignored by fifo and stack queues)."""
        item = (dumps(message), message["properties"].get("priority") or 0)
        batch = kwargs.get("_publish_batch")
        if batch is not None:
            batch.add_put(queue, kwargs.get(_EXCHANGE), item)
        else:
            self.put_items(queue, kwargs.get(_EXCHANGE), [item])

    def put_items(self, queue: str, exchange: str | None, items: list[tuple[str, Any]]) -> None:
        """Put ``(payload, priority)`` items routed by ``exchange`` ("" or None: the default)."""
        try:
            self.store.put(queue, items)
        except QueueNotFound:
            if not exchange:
                raise queue_not_found(queue) from None
            self._unbind_missing(exchange, queue)
            return
        self._touch(queue)

    def create_publish_batch(self, max_size: int) -> PublishBatch:
        """Kombu's ``Producer.batch()`` hook: one script call per queue at flush."""
        return PublishBatch(self, max_size)

    def _get_publish_topic(self, exchange: str, routing_key: str) -> str:
        """The pub/sub channel of a fanout message: ``namespace.fanout(exchange)``, with
        ``/<routing key>`` when ``fanout_patterns`` (Kombu's: ``/<db>.<exchange>``)."""
        topic = self.namespace.fanout(exchange)
        return f"{topic}/{routing_key}" if routing_key and self.fanout_patterns else topic

    def _handle_message(self, client: Any, r: Any) -> dict[str, Any]:
        """Kombu's, with the pub/sub channel name made relative to the fanout topics (Kombu's
        reader takes the exchange from what follows)."""
        message: dict[str, Any] = super()._handle_message(client, r)
        topic = bytes_to_str(message["channel"])
        for prefix in (self.namespace.fanout(""), self.global_keyprefix):
            if prefix and topic.startswith(prefix):
                message["channel"] = topic[len(prefix):]
                break
        return message

    # -- consuming ---------------------------------------------------------------------------

    def _payload(self, stored: Stored, lease: str) -> dict[str, Any]:
        """The Kombu payload of a taken message, with a delivery tag of its own; ``lease`` ("" if
        taken for good) and its member travel with it so that any channel can settle it."""
        tag = self._next_delivery_tag()
        try:
            payload = read_payload(stored.payload)
        except MalformedPayload as exc:
            payload = unparseable_message(stored.payload, stored.queue, tag, str(exc))
        else:
            properties = payload["properties"]
            properties["delivery_tag"] = tag
            if stored.redelivered:
                payload["headers"] = {**(payload.get("headers") or {}), "redelivered": True}
                properties["delivery_info"] = {**(properties.get("delivery_info") or {}), "redelivered": True}
        if lease:
            payload[IN_FLIGHT] = (stored.queue, lease, stored.member)
        return payload

    def settle(self, queue: str, lease: str, *, acks: Sequence[str] = (), requeues: Sequence[str] = ()) -> None:
        """:meth:`Lease.settle` for lease ``lease`` (a channel of this connection may settle
        what another took); a queue deleted meanwhile has nothing left to settle."""
        try:
            self.store.take(queue, lease, 0, acks=acks, requeues=requeues)
        except QueueNotFound:
            pass

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """Take the next message for good (Kombu's pops it)."""
        with not_found_as_404(queue):
            stored = self.store.get(queue)
        self._touch(queue)
        if stored is None:
            raise Empty()
        return self._payload(stored, "")

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Kombu's, except that without ``no_ack`` the message is taken in flight under this
        channel's lease instead of popped and recorded in the unacked hash."""
        if no_ack:
            try:
                return self.Message(self._get(queue), channel=self)
            except Empty:
                return None
        with not_found_as_404(queue):
            found = self.lease.take(queue, 1)
        self._touch(queue)
        if not found:
            return None
        message = self.Message(self._payload(found[0], self.lease.id), channel=self)
        self.qos.append(message, message.delivery_tag)
        return message

    @cached_property
    def announcer(self) -> ChannelAnnouncer:
        """Lists this channel in the worker registry while it consumes."""
        return ChannelAnnouncer(self)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Kombu's; a consumed queue lives as long as its bindings (see ``x-expires``), and
        the channel is listed in the worker registry from now on."""
        result = super().basic_consume(queue, no_ack, *args, **kwargs)
        self._touch(queue)
        self.announcer.start()
        return result

    def _basic_cancel(self, consumer_tag: str) -> Any:
        """Kombu's; a queue no longer consumed here counts its ``x-expires`` from now."""
        queue = self._tag_to_queue.get(consumer_tag)
        result = super()._basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            try:
                self._touch(queue)
            except self.connection_errors:
                logger.debug("x-expires of %r not renewed at cancel", queue, exc_info=True)
        return result

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Kombu's BRPOP on the pinned connection, on the consumed queues' wake-up lists (one
        token per ready message) rather than on the queues themselves."""
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        groups = self.store.slot_groups(queues)
        self._brpop_turn += 1
        self._brpop_queues = groups[self._brpop_turn % len(groups)]
        keys = [self.namespace.queue(queue).wake for queue in self._brpop_queues]
        self._connect_brpop(keys[0])
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        timeout = self.brpop_timeout if timeout is None else timeout
        self.client.connection.send_command("BRPOP", *keys, timeout / len(groups) if timeout else 0)

    def _connect_brpop(self, key: str) -> None:
        """Make sure the pinned connection reaches the server holding ``key`` (a single server
        holds every key: nothing to do)."""

    def _brpop_read(self, **options: Any) -> bool:
        """Read the BRPOP reply and deliver one message of the queue it woke for, taken from the
        store on a pooled connection. Replaces Kombu's, which delivers the popped message.

        A nil reply (the queues stayed idle for the BRPOP timeout) makes one take per queue
        the BRPOP waited on instead: it delivers a message whose token was lost (a reply that never reached
        its consumer) and releases the expired leases of dead consumers. While the channel
        closes, the reply is only read.
        """
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        active = self.active_queues
        if self._closing:
            queues = []
        elif reply:
            queues = [self.namespace.queue_of_wake_key(bytes_to_str(reply[0]))]
        else:
            queues = list(self._brpop_queues)
        for queue in queues:
            if queue in active and self._deliver_one(queue):
                return True
        raise Empty()

    def _deliver_one(self, queue: str) -> bool:
        """Take one message of ``queue`` (under the lease, or for good for a ``no_ack``
        consumer) and deliver it; False when there is none."""
        lease = "" if queue in self._no_ack_queues else self.lease.id
        try:
            found = self.store.take(queue, "", 1) if not lease else self.lease.take(queue, 1)
        except QueueNotFound:
            return False  # deleted under its consumer: BRPOP goes on waiting, as on Kombu's
        if not found:
            return False
        self._queue_cycle.rotate(queue)
        self.connection._deliver(self._payload(found[0], lease), queue)
        return True

    # -- connections -------------------------------------------------------------------------

    def _on_connection_disconnect(self, connection: Any) -> None:
        """Kombu's, and the store's idle pooled connections are dropped too: when the BRPOP or
        pub/sub connection was lost or found half-open, they most likely are as well."""
        super()._on_connection_disconnect(connection)
        store = self.__dict__.get("store")
        if store is not None:
            store.disconnect(in_use=False)

    def close(self) -> None:
        """Kombu's close (unacknowledged messages go back), then the lease gives back anything
        it still holds and stops its heartbeat."""
        announcer = self.__dict__.get("announcer")
        if announcer is not None:
            announcer.close()
        try:
            super().close()
        finally:
            lease, store = self.__dict__.get("lease"), self.__dict__.get("store")
            try:
                if lease is not None:
                    lease.close()
            except self.connection_errors:
                logger.warning("lease not released: its messages return after lease_timeout", exc_info=True)
            finally:
                if store is not None:
                    store.disconnect()


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """Kombu's Redis transport with this package's channel."""

    Channel = Channel
    driver_name = "mindtrace-redis"
