"""From a received message to a :class:`~.models.Job`, one layer at a time, never raising
anything but :class:`Undecodable`.

The layers, in order: the transport envelope (a backend marks data that is not a Kombu message
as unparseable, with the reason), the size on the wire, the compression named by the
``compression`` header (decompressed in bounded steps: a decompression bomb costs at most the
limit), the content type, the serializer, and the job itself. The caller dead-letters the
original message -- the bytes as the broker held them, still compressed -- with the reason.
"""

from __future__ import annotations

import bz2
import functools
import lzma
import zlib
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, Mapping, Protocol

from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import loads as kombu_loads

from .arguments import check_count
from .backends.base import UNPARSEABLE_CONTENT_TYPE, UNPARSEABLE_REASON, WireMessage
from .models import Job
from .serialization import ACCEPT

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DecodeLimits",
    "Undecodable",
    "decode_job",
    "decompress",
]

#: Default limit of a message body as the broker holds it.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Default limit of a compressed body once decompressed.
DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
_CHUNK = 64 * 1024  # compressed bytes fed to a decompressor at a time


class Undecodable(ValueError):
    """The message is not a job; ``str(exc)`` is the reason, for the dead-letter header."""


@dataclass(frozen=True)
class DecodeLimits:
    """Size limits of received messages: on the wire, and once decompressed."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES

    def __post_init__(self) -> None:
        check_count("max_message_bytes", self.max_message_bytes)
        check_count("max_decompressed_bytes", self.max_decompressed_bytes)


#: The limits every orchestrator starts with.
DEFAULT_LIMITS = DecodeLimits()


class _Decompressor(Protocol):
    """The streaming interface of zlib's, bz2's, lzma's (and zstd's) decompressors."""

    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int, /) -> bytes: ...


def _zstd() -> Callable[[], _Decompressor] | None:
    for module in ("compression.zstd", "backports.zstd"):  # the standard library's, from 3.14
        try:
            return import_module(module).ZstdDecompressor  # type: ignore[no-any-return]
        except ImportError:
            continue
    return None


#: Compressions by Kombu's content type (``headers["compression"]``); the aliases Kombu accepts
#: name the same ones. Brotli has no bounded decompressor, so its messages are dead-lettered.
_DECOMPRESSORS: dict[str, Callable[[], _Decompressor]] = {
    "application/x-gzip": functools.partial(zlib.decompressobj, wbits=47),  # zlib or gzip framing
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}
if (_zstd_decompressor := _zstd()) is not None:
    _DECOMPRESSORS["application/zstd"] = _zstd_decompressor
_ALIASES = {
    "gzip": "application/x-gzip", "zlib": "application/x-gzip", "bzip2": "application/x-bz2",
    "bzip": "application/x-bz2", "lzma": "application/x-lzma", "xz": "application/x-lzma",
    "zstd": "application/zstd", "zstandard": "application/zstd",
}


def decompress(body: bytes, compression: str, limit: int) -> bytes:
    """``body`` decompressed with ``compression`` (a Kombu compression content type or alias),
    in steps that never hold more than ``limit + 1`` decompressed bytes.

    Raises:
        Undecodable: an unknown compression, data that is not in that format or is cut short,
            or more than ``limit`` bytes once decompressed.
    """
    factory = _DECOMPRESSORS.get(_ALIASES.get(compression, compression))
    if factory is None:
        raise Undecodable(f"unsupported compression {compression!r} (known: {', '.join(sorted(_DECOMPRESSORS))})")
    decompressor, output, size = factory(), list[bytes](), 0
    try:
        for start in range(0, len(body), _CHUNK):
            # asking for one byte over the limit: getting it means the body inflates beyond it;
            # getting less means the chunk was read to its end
            output.append(decompressor.decompress(body[start:start + _CHUNK], limit + 1 - size))
            size += len(output[-1])
            if size > limit or decompressor.eof:
                break
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        raise Undecodable(f"body is not valid {compression} data: {exc}") from None
    if size > limit:
        raise Undecodable(f"decompression bomb: the {compression} body inflates beyond {limit} bytes")
    if not decompressor.eof:
        raise Undecodable(f"body is not valid {compression} data: it is cut short")
    return b"".join(output)


def decode_job(message: WireMessage, limits: DecodeLimits) -> Job:
    """The job in ``message``, checked layer by layer (see the module docstring).

    Raises:
        Undecodable: with the reason; nothing else.
    """
    if message.content_type == UNPARSEABLE_CONTENT_TYPE:
        raise Undecodable(str(message.headers.get(UNPARSEABLE_REASON, "not a Kombu message")))
    body = message.body
    if len(body) > limits.max_message_bytes:
        raise Undecodable(f"oversize: {len(body)} bytes, the limit is {limits.max_message_bytes}")
    compression = _compression(message.headers)
    if compression is not None:
        body = decompress(body, compression, limits.max_decompressed_bytes)
    try:
        decoded: Any = kombu_loads(body, message.content_type, message.content_encoding, accept=set(ACCEPT))
    except ContentDisallowed:
        raise Undecodable(f"content type {message.content_type!r} is not a job (expected {ACCEPT[0]!r})") from None
    except DecodeError as exc:
        raise Undecodable(f"cannot decode body: {exc}") from None
    if not isinstance(decoded, Job):
        raise Undecodable(f"body decodes to {type(decoded).__name__}, not a Job")
    return decoded


def _compression(headers: Mapping[str, Any]) -> str | None:
    compression = headers.get("compression")
    if compression is None or isinstance(compression, str):
        return compression
    raise Undecodable(f"compression header is {type(compression).__name__}, not a string")
