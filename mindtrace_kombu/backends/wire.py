"""Kombu's wire format, shared by every backend and by the Kombu transports.

A message is encoded once (:func:`encode`, through Kombu's serializer registry) into a
:class:`~.base.WireMessage`. The virtual transports (memory, Redis) store it in the layout of
Kombu's virtual ``Channel`` -- ``{"body", "content-type", "content-encoding", "headers",
"properties"}`` with the body base64-encoded on Redis -- so a message put by this package is the
message a Kombu or Celery consumer of the same transport expects, and the other way round.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import os
import sys
import uuid
from typing import Any, Mapping

from kombu.serialization import dumps as kombu_dumps

from .base import UNPARSEABLE_CONTENT_TYPE, UNPARSEABLE_REASON, WireMessage

__all__ = [
    "MalformedPayload", "decode_payload", "delivery_tag", "encode", "encode_payload", "message_properties",
    "read_payload",
]

#: Producer options that travel as message properties (as ``Producer.publish`` sends them).
_PROPERTY_OPTIONS = ("correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id")


def message_properties(source: Mapping[str, Any]) -> dict[str, Any]:
    """The message properties among ``source``'s items (publish options or received
    properties) that a :class:`~.base.WireMessage` carries: ``correlation_id``, ``reply_to``..."""
    return {key: source[key] for key in _PROPERTY_OPTIONS if source.get(key) is not None}

_TAG_PREFIX = uuid.uuid4().hex[:16]
_tag_counter = itertools.count(1)


def delivery_tag() -> str:
    """A delivery tag unique across processes: a random per-process prefix, the process id (a
    forked child differs) and a counter. Kombu draws a uuid4 per message instead."""
    return f"{_TAG_PREFIX}.{os.getpid()}.{next(_tag_counter)}"


def encode(body: Any, options: Mapping[str, Any], serializer: str) -> WireMessage:
    """Encode ``body`` as ``Producer.publish(body, **options)`` would: with ``options``'
    ``serializer`` (default ``serializer``), or as is when ``content_type`` is given."""
    content_type = options.get("content_type")
    if content_type is not None and isinstance(body, (bytes, str)):
        encoding = options.get("content_encoding") or ("utf-8" if isinstance(body, str) else "binary")
        data = body.encode(encoding) if isinstance(body, str) else body
    else:
        content_type, encoding, text = kombu_dumps(body, serializer=options.get("serializer", serializer))
        data = text.encode(encoding) if isinstance(text, str) else text
    properties = message_properties(options)
    return WireMessage(data, content_type, encoding, dict(options.get("headers") or {}), properties)


def encode_payload(
    message: WireMessage, exchange: str, routing_key: str, priority: int | None, delivery_tag: str,
    *, base64_body: bool = True,
) -> dict[str, Any]:
    """The virtual-transport payload of ``message`` (Kombu's ``prepare_message`` +
    ``basic_publish``), persistent (``delivery_mode`` 2)."""
    body: Any = message.body
    if base64_body:
        body = base64.b64encode(message.body).decode("ascii")
    elif message.content_encoding != "binary":
        body = message.body.decode(message.content_encoding)
    properties = {
        **message.properties,
        "delivery_mode": 2,
        "delivery_info": {"exchange": exchange, "routing_key": routing_key},
        "priority": priority or 0,
        "delivery_tag": delivery_tag,
    }
    if base64_body:
        properties["body_encoding"] = "base64"
    return {
        "body": body,
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": dict(message.headers),
        "properties": properties,
    }


if sys.version_info >= (3, 11):
    def _strict_b64decode(data: Any) -> bytes:
        """Base64 with nothing but the alphabet and padding at the end, in one C pass."""
        return binascii.a2b_base64(data, strict_mode=True)
else:  # pragma: no cover - Python 3.10: the same check, with a regex pass first
    def _strict_b64decode(data: Any) -> bytes:
        """Base64 with nothing but the alphabet and padding at the end."""
        return base64.b64decode(data, validate=True)


class MalformedPayload(ValueError):
    """Stored data that is not a virtual-transport payload; the message says what is wrong."""


def read_payload(raw: bytes) -> dict[str, Any]:
    """The virtual-transport payload stored as ``raw``: a JSON object whose ``properties``,
    ``headers`` and ``delivery_info`` are objects (or absent) and whose ``body`` its
    ``body_encoding`` can decode (Kombu's virtual channel knows base64 and none).

    Raises:
        MalformedPayload: anything else (raw bytes written by hand, a broken body encoding).
    """
    return _read_payload_and_body(raw)[0]


def _read_payload_and_body(raw: bytes) -> tuple[dict[str, Any], bytes | None]:
    """:func:`read_payload`, and the body decoded from base64 when it is base64 (else None)."""
    try:
        payload = json.loads(raw)
    except ValueError as exc:  # also UnicodeDecodeError
        raise MalformedPayload(f"not a Kombu message: not JSON ({exc})") from None
    if not isinstance(payload, dict) or "body" not in payload:
        raise MalformedPayload("not a Kombu message: no JSON object with a body")
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        raise MalformedPayload("malformed Kombu message: properties is not an object")
    for name, value in (("headers", payload.get("headers")), ("delivery_info", properties.get("delivery_info"))):
        if value is not None and not isinstance(value, dict):
            raise MalformedPayload(f"malformed Kombu message: {name} is {type(value).__name__}, not an object")
    encoding = properties.get("body_encoding")
    if encoding == "base64":
        try:
            return payload, _strict_b64decode(payload["body"])
        except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
            raise MalformedPayload(f"malformed Kombu message: body is not valid base64 ({exc})") from None
    if encoding is not None and str(encoding).lower() != "utf-8":
        raise MalformedPayload(f"malformed Kombu message: unknown body_encoding {encoding!r}")
    if not isinstance(payload["body"], str):
        raise MalformedPayload("malformed Kombu message: body is not a string")
    return payload, None


def decode_payload(raw: bytes) -> tuple[WireMessage, int]:
    """The message in a stored virtual-transport payload, and the priority it was published
    with. Data that is not one (:func:`read_payload`) becomes an unparseable message holding
    the original bytes and, in its :data:`~.base.UNPARSEABLE_REASON` header, what is wrong;
    no consumer accepts it: it is dead-lettered, never dropped."""
    try:
        payload, data = _read_payload_and_body(raw)
        properties = payload["properties"]
        if data is None:
            data = payload["body"].encode(payload.get("content-encoding") or "utf-8")
        priority = int(properties.get("priority") or 0)
    except (ValueError, TypeError, LookupError) as exc:  # MalformedPayload, an unknown text encoding...
        reason = str(exc) if isinstance(exc, MalformedPayload) else f"malformed Kombu message: {exc}"
        return WireMessage(raw, UNPARSEABLE_CONTENT_TYPE, "binary", {UNPARSEABLE_REASON: reason}), 0
    message = WireMessage(
        data, payload.get("content-type") or "application/data", payload.get("content-encoding") or "binary",
        dict(payload.get("headers") or {}), message_properties(properties),
    )
    return message, priority
