"""How calls leave: an upstream's answer, the HTTP client that gets it, and a target the
gateway read itself. The senders of ``gateway.upstreams`` use them (their own protocol,
``Sender``, is typed on the call, so it lives beside it: ``gateway.services.call``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class UpstreamResponse:
    """Status, headers and a body that is either fully read or a byte stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None

    async def read(self) -> bytes:
        if self.body is not None:
            return self.body
        chunks = []
        if self.stream is not None:
            async for chunk in self.stream:
                chunks.append(chunk)
        self.body = b"".join(chunks)
        self.stream = None
        return self.body


class Upstream(Protocol):
    """HTTP to the APIs behind the gateway. Raises ``UpstreamUnreachable`` or
    ``UpstreamTimeout`` (gateway.errors) and nothing else for transport failures; their
    ``maybe_sent`` says whether the request may have reached the upstream (``UpstreamLost``,
    ``UpstreamTimeout``) or surely did not (``UpstreamUnreachable``, ``ConnectTimeout``).
    A write is never sent twice."""

    async def request(self, method: str, url: str, headers: Mapping[str, str] | list[tuple[str, str]],
                      body: bytes | AsyncIterator[bytes] | None, *, stream: bool = False,
                      timeout: float | None = None, total: bool = False) -> UpstreamResponse: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Observed:
    """A target read by the gateway itself: its status, its state as journaled, its ETag."""

    status: int
    value: Any  # redacted, as journaled and shown
    etag: str | None
    body: bytes = b""  # the bytes read, for what is sealed (true values, byte-exact priors)
    content_type: str | None = None
    meta: tuple[tuple[str, str], ...] = ()  # an object's own headers (S3 x-amz-meta-*)
    true: Any = None  # ``body`` as JSON when the reader parsed it already (None: parse it)


Headers = list[tuple[str, str]]


def untraced(headers: Headers) -> Headers:
    """A ``trace`` that adds nothing (the default when a step is not traced)."""
    return headers
