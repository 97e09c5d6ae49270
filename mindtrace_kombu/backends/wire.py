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
import uuid
from typing import Any, Mapping

from kombu.serialization import dumps as kombu_dumps

from .base import UNPARSEABLE_CONTENT_TYPE, WireMessage

__all__ = ["decode_payload", "delivery_tag", "encode", "encode_payload", "message_properties", "parse_payload"]

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


def parse_payload(raw: bytes) -> dict[str, Any] | None:
    """The virtual-transport payload stored as ``raw``, or None when it is not one: not JSON,
    no ``properties`` mapping or ``body``, or a body its ``body_encoding`` cannot decode (Kombu's
    virtual channel knows base64 and none)."""
    try:
        payload = json.loads(raw)
        properties, body = payload["properties"], payload["body"]
        encoding = properties.get("body_encoding")
        if encoding == "base64":
            base64.b64decode(body, validate=True)
        elif encoding is not None and str(encoding).lower() != "utf-8":
            return None
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


def decode_payload(raw: bytes) -> tuple[WireMessage, int]:
    """The message in a stored virtual-transport payload, and the priority it was published
    with. Data that is not one (:func:`parse_payload`: raw bytes written by hand, a broken body
    encoding) becomes an unparseable message holding the original bytes, which no consumer
    accepts: it is dead-lettered, never dropped."""
    payload = parse_payload(raw)
    try:
        if payload is None:
            raise ValueError("not a Kombu message")
        properties, body = payload["properties"], payload["body"]
        if properties.get("body_encoding") == "base64":
            data = base64.b64decode(body)
        else:
            data = str(body).encode(payload.get("content-encoding") or "utf-8")
        message = WireMessage(
            data, payload.get("content-type") or "application/data", payload.get("content-encoding") or "binary",
            dict(payload.get("headers") or {}), message_properties(properties),
        )
        return message, int(properties.get("priority") or 0)
    except (ValueError, TypeError, AttributeError, LookupError):
        return WireMessage(raw, UNPARSEABLE_CONTENT_TYPE, "binary"), 0
