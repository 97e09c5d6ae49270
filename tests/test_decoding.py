"""The decode path's compression layer: Kombu's codecs, read in bounded steps."""

from __future__ import annotations

import os

import pytest
from kombu import compression

from mindtrace_kombu.decoding import Undecodable, decompress

DATA = os.urandom(100_000) + b"0" * 300_000


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "lzma"])
def test_kombu_compressed_bodies_decompress_by_content_type_and_alias(codec: str) -> None:
    body, content_type = compression.compress(DATA, codec)
    assert decompress(body, content_type, len(DATA)) == DATA
    assert decompress(body, codec, len(DATA)) == DATA


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "lzma"])
def test_a_body_one_byte_over_the_limit_is_a_bomb(codec: str) -> None:
    body, content_type = compression.compress(DATA, codec)
    with pytest.raises(Undecodable, match="decompression bomb"):
        decompress(body, content_type, len(DATA) - 1)


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "lzma"])
def test_truncated_and_foreign_bodies_are_refused(codec: str) -> None:
    body, content_type = compression.compress(DATA, codec)
    with pytest.raises(Undecodable, match="cut short"):
        decompress(body[: len(body) // 2], content_type, len(DATA))
    with pytest.raises(Undecodable, match="not valid"):
        decompress(b"plain text, not compressed", content_type, len(DATA))
    with pytest.raises(Undecodable, match="cut short"):
        decompress(b"", content_type, len(DATA))


def test_gzip_framing_is_read_as_well_as_zlib() -> None:
    import gzip

    assert decompress(gzip.compress(DATA), "application/x-gzip", len(DATA)) == DATA


def test_unknown_compression_names_the_known_ones() -> None:
    with pytest.raises(Undecodable, match=r"unsupported compression 'application/x-brotli' \(known: .*x-gzip"):
        decompress(b"x", "application/x-brotli", 10)
