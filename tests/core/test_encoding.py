"""Undoing an upstream answer's Content-Encoding: gzip and deflate (zlib or raw), whole
or chunk by chunk, several codings in order; anything else, or a broken body, refused."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gateway.core.encoding import Decoder, codings
from gateway.errors import UpstreamEncoding

TEXT = b'{"next": "/items?api_key=secret&page=2"}' * 50


def deflated(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(wbits=wbits)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("applied", "body"), [
    (["gzip"], gzip.compress(TEXT, mtime=0)),
    (["x-gzip"], gzip.compress(TEXT, mtime=0)),
    (["deflate"], deflated(TEXT, 15)),  # as the RFC says
    (["deflate"], deflated(TEXT, -15)),  # raw, as some servers send it
    (["gzip"], gzip.compress(TEXT[:100], mtime=0)
     + gzip.compress(TEXT[100:], mtime=0)),  # two members
    (["deflate", "gzip"], gzip.compress(deflated(TEXT, 15), mtime=0)),  # applied in this order
    (["gzip"], b""),  # nothing to decode
])
def test_bodies_decode_whole_and_byte_by_byte(applied: list[str], body: bytes) -> None:
    expected = TEXT if body else b""
    assert Decoder(applied).whole(body) == expected
    decoder = Decoder(applied)
    out = b"".join(piece for at in range(len(body)) for piece in decoder.feed(body[at:at + 1]))
    assert out + decoder.end() == expected


def test_a_large_body_comes_in_bounded_pieces() -> None:
    body = gzip.compress(b"\0" * (5 << 20), mtime=0)  # a few KiB for 5 MiB
    pieces = list(Decoder(["gzip"]).feed(body))
    assert sum(map(len, pieces)) == 5 << 20 and max(map(len, pieces)) <= 1 << 20


@pytest.mark.parametrize(("applied", "body", "why"), [
    (["br"], b"\x0b\x02\x80hello\x03", "Content-Encoding br"),
    (["zstd"], b"\x28\xb5\x2f\xfd", "Content-Encoding zstd"),
    (["gzip", "compress"], b"", "Content-Encoding compress"),
    (["gzip"], b"not gzip at all", "does not decode"),
    (["gzip"], gzip.compress(TEXT, mtime=0)[:-12], "ends too soon"),
    (["deflate"], b"x", "ends too soon"),
    (["deflate"], deflated(TEXT, 15) + b"more", "data after its end"),
])
def test_what_cannot_be_decoded_is_refused(applied: list[str], body: bytes, why: str) -> None:
    with pytest.raises(UpstreamEncoding, match=why) as raised:
        Decoder(applied).whole(body)
    assert raised.value.status == 502 and raised.value.code == "upstream_encoding"


def test_codings_are_read_in_the_order_applied() -> None:
    assert codings([("Content-Type", "text/plain")]) == []
    assert codings([("content-encoding", "identity")]) == []
    assert codings([("Content-Encoding", "deflate"), ("content-encoding", " GZip ")]) == \
        ["deflate", "gzip"]


def test_a_body_read_whole_that_inflates_past_the_limit_is_refused() -> None:
    bomb = zlib.compress(b"\0" * (1 << 22), wbits=31)  # 4 MiB of zeros in ~4 KiB
    assert Decoder(["gzip"]).whole(bomb, limit=1 << 22) == b"\0" * (1 << 22)
    with pytest.raises(UpstreamEncoding, match="more than 1048576 bytes"):
        Decoder(["gzip"]).whole(bomb, limit=1 << 20)
