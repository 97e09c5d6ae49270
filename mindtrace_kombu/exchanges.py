"""Exchange names, types and routing keys, validated before any broker call (exchanges exist on
RabbitMQ; the other backends raise :class:`~.errors.UnsupportedOperation`)."""

from __future__ import annotations

from .errors import InvalidArgument

__all__ = ["EXCHANGE_TYPES", "validate_exchange", "validate_routing_key"]

#: The AMQP exchange types.
EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")
_MAX_BYTES = 255  # AMQP short strings


def _short_string(kind: str, value: object) -> str:
    if not isinstance(value, str) or len(value.encode("utf-8")) > _MAX_BYTES:
        raise InvalidArgument(kind, value, f"it must be a string of at most {_MAX_BYTES} bytes")
    return value


def validate_exchange(name: object, exchange_type: object = "direct") -> str:
    """Return ``name`` if it can name an exchange of ``exchange_type``, else raise
    :class:`InvalidArgument` (empty, too long, ``amq.`` prefix, unknown type)."""
    if exchange_type not in EXCHANGE_TYPES:
        raise InvalidArgument("exchange type", exchange_type, f"it is one of {', '.join(EXCHANGE_TYPES)}")
    if not _short_string("exchange name", name) or str(name).startswith("amq."):
        raise InvalidArgument("exchange name", name, "a non-empty name without the reserved 'amq.' prefix")
    return str(name)


def validate_routing_key(routing_key: object) -> str:
    """Return ``routing_key`` if AMQP can carry it, else raise :class:`InvalidArgument`."""
    return _short_string("routing key", routing_key)
