"""An upstream answer's ``Content-Encoding`` undone, so that what it carries can be read
(pure: stdlib ``zlib``).

The gateway asks an upstream it injects a credential into for ``identity``: an echo of
the credential inside a compressed body could not be found and replaced
(``gateway.core.redact.Echoes``). An upstream may compress anyway. gzip and deflate
(zlib-wrapped as the RFC says, or raw as some servers send it) are undone, whole or
chunk by chunk, so the gateway reads and forwards the answer as identity. Any other
coding (br, zstd, compress) is refused with ``UpstreamEncoding`` (502): the gateway
cannot look inside it, and an answer it cannot look inside must not pass.

>>> import zlib
>>> Decoder(["gzip"]).whole(zlib.compress(b"hello", wbits=31))
b'hello'
>>> Decoder(["br"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
gateway.errors.UpstreamEncoding: the upstream answered with Content-Encoding br, ...
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from gateway.errors import UpstreamEncoding

_DECODED = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib's wbits for each
_PIECE = 1 << 20  # a stream is decoded in pieces of at most this many bytes
WHOLE_LIMIT = 64 << 20  # a body read whole is refused if it decodes to more than this


def codings(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The content codings applied to a body, in the order applied (``identity`` left
    out); [] for a body sent as it is.

    >>> codings([("Content-Encoding", "deflate, GZIP"), ("content-type", "text/plain")])
    ['deflate', 'gzip']
    """
    found = [coding.strip().lower() for name, value in headers
             if name.lower() == "content-encoding" for coding in value.split(",")]
    return [coding for coding in found if coding and coding != "identity"]


class Decoder:
    """The codings of one body undone, the last applied first: ``whole`` for a body read
    whole, ``feed``/``end`` for a stream. A body that does not decode raises
    ``UpstreamEncoding``."""

    __slots__ = ("_stages",)

    def __init__(self, applied: list[str]) -> None:
        refused = [coding for coding in applied if coding not in _DECODED]
        if refused:
            raise UpstreamEncoding(
                f"the upstream answered with Content-Encoding {', '.join(refused)}, which the "
                "gateway cannot decode to look for its credential; it asked for identity")
        self._stages = [_Stage(coding) for coding in reversed(applied)]

    def whole(self, data: bytes, limit: int = WHOLE_LIMIT) -> bytes:
        """``data`` decoded; refused past ``limit`` bytes (a small body that inflates
        without end must not take the process's memory with it)."""
        pieces, size = [], 0
        for piece in self.feed(data):
            size += len(piece)
            if size > limit:
                raise UpstreamEncoding(
                    f"the upstream's {'+'.join(s.coding for s in reversed(self._stages))} "
                    f"answer decodes to more than {limit} bytes; the gateway reads answers "
                    "this large only as identity")
            pieces.append(piece)
        return b"".join(pieces) + self.end()

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """What ``chunk`` decodes to so far, in pieces of bounded size."""
        pieces: Iterable[bytes] = (chunk,)
        for stage in self._stages:
            pieces = stage.feed_all(pieces)
        return (piece for piece in pieces if piece)

    def end(self) -> bytes:
        """The rest, once the body ended; a truncated body raises."""
        data = b""
        for stage in self._stages:
            data = b"".join(stage.feed_all((data,))) + stage.end()
        return data


class _Stage:
    __slots__ = ("coding", "_inflate", "_head", "_done")

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._inflate: zlib._Decompress | None = None  # made once the header is seen
        self._head = b""  # deflate: the first bytes, until they say zlib-wrapped or raw
        self._done = False

    def feed_all(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield from self.feed(chunk)

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._inflate is None:
            data = self._head + data
            if self.coding == "deflate" and len(data) < 2:
                self._head = data
                return
            self._head = b""
            if not data:
                return
            self._inflate = zlib.decompressobj(wbits=self._wbits(data))
        while True:
            if self._done:  # a gzip body may hold several members; anything else is not one
                if not data:
                    return
                if self.coding == "deflate":
                    raise self._broken("data after its end")
                self._inflate, self._done = zlib.decompressobj(wbits=31), False
            try:
                out = self._inflate.decompress(data, _PIECE)
            except zlib.error as exc:
                raise self._broken(str(exc)) from None
            if out:
                yield out
            if self._inflate.eof:
                self._done, data = True, self._inflate.unused_data
                continue
            data = self._inflate.unconsumed_tail
            if not data and len(out) < _PIECE:  # all read, and no output left waiting
                return

    def end(self) -> bytes:
        if self._head:
            raise self._broken("it ends too soon")
        if self._inflate is None:
            return b""  # an empty body
        if not self._done and not self._inflate.eof:
            raise self._broken("it ends too soon")
        return b""

    def _wbits(self, head: bytes) -> int:
        if self.coding != "deflate":
            return _DECODED[self.coding]
        zlib_wrapped = head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
        return 15 if zlib_wrapped else -15

    def _broken(self, why: str) -> UpstreamEncoding:
        return UpstreamEncoding(f"the upstream's {self.coding} body does not decode ({why})")
