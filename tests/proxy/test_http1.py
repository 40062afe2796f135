"""The upstream client against a raw socket server that answers byte for byte as scripted:
framing (length, chunked, close-delimited, HEAD, 1xx), connection reuse and retry,
verbatim requests, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from gateway.errors import UpstreamTimeout, UpstreamUnreachable
from gateway.upstreams.client import UpstreamClient, split_url

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # False: close after
# (the answer may read ``Raw.connections``: which connection, counted from 1, is asking)


@dataclass
class Raw:
    url: str
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head + body
            body += chunk[:-2]
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return head + await reader.readexactly(int(line.split(b":")[1]))
    return head


@asynccontextmanager
async def raw_server(answer: Answer, raw: Raw | None = None) -> AsyncIterator[Raw]:
    raw = raw or Raw("")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw.connections += 1
        try:
            while (request := await _read_request(reader)) is not None:
                raw.requests.append(request)
                if not await answer(request, writer):
                    break
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    raw.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield raw


def reply(data: bytes, keep: bool = True) -> Answer:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        return keep
    return answer


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Case: Kept\r\n\r\nhello"


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient(timeout=5)
    yield upstream
    await upstream.close()


async def test_requests_go_verbatim_and_connections_are_reused(client: UpstreamClient) -> None:
    async with raw_server(reply(OK)) as raw:
        for _ in range(3):
            response = await client.request("GET", raw.url + "/a%2Fb/%7e?q=%20&x", [], None)
            assert (response.status, response.body) == (200, b"hello")
        assert ("X-Case", "Kept") in response.headers  # the upstream's own spelling
    assert raw.connections == 1
    assert raw.requests[0] == (f"GET /a%2Fb/%7e?q=%20&x HTTP/1.1\r\n"
                               f"host: {raw.url[7:]}\r\n\r\n").encode()


async def test_bodies_are_framed_by_length_or_chunked(client: UpstreamClient) -> None:
    async def upload() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b""
        yield b"cde"

    async with raw_server(reply(OK)) as raw:
        await client.request("PATCH", raw.url + "/x", [("content-type", "text/plain")], b"12")
        await client.request("POST", raw.url + "/x", [], b"")
        await client.request("PUT", raw.url + "/x", [], upload())
    assert raw.requests[0].endswith(b"content-length: 2\r\n\r\n12")
    assert raw.requests[1].endswith(b"content-length: 0\r\n\r\n")
    assert b"transfer-encoding: chunked" in raw.requests[2]
    assert raw.requests[2].endswith(b"abcde")  # as the test server reassembles it


async def test_chunked_and_close_delimited_responses(client: UpstreamClient) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    async with raw_server(reply(chunked)) as raw:
        response = await client.request("GET", raw.url + "/c", [], None, stream=True)
        assert response.stream is not None
        assert b"".join([c async for c in response.stream]) == b"abcde"
        response = await client.request("GET", raw.url + "/c", [], None)
        assert response.body == b"abcde"
    assert raw.connections == 1  # the stream, read to its end, gave its connection back
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
    async with raw_server(reply(until_close, keep=False)) as raw:
        assert (await client.request("GET", raw.url + "/e", [], None)).body == b"all of it"


async def test_head_and_informational_responses(client: UpstreamClient) -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if request.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        return True

    async with raw_server(answer) as raw:
        head = await client.request("HEAD", raw.url + "/h", [], None, stream=True)
        assert (head.status, head.body) == (200, b"")
        assert ("Content-Length", "1000") in head.headers
        after = await client.request("POST", raw.url + "/p", [("expect", "100-continue")], b"x")
        assert (after.status, after.body) == (200, b"hello")
    assert raw.connections == 1


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("PATCH", False)])
async def test_an_idle_connection_the_upstream_dropped_is_retried_for_idempotent_calls(
        client: UpstreamClient, method: str, retried: bool) -> None:
    raw = Raw("")

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if raw.connections == 1 and b"/again" in request:
            return False  # gone without a word, as a server timing out an idle connection
        writer.write(OK)
        return True

    async with raw_server(answer, raw) as raw:
        await client.request("GET", raw.url + "/warm", [], None)
        if retried:
            assert (await client.request(method, raw.url + "/again", [], b"")).body == b"hello"
        else:  # a write may have been acted on: it is not sent twice
            with pytest.raises(UpstreamUnreachable):
                await client.request(method, raw.url + "/again", [], b"{}")
    assert sum(b"/again" in r for r in raw.requests) == (2 if retried else 1)


@pytest.mark.parametrize("headers", [
    [("x-evil", "a\r\nx-injected: 1")], [("x-ok", "1"), ("x-evil", "a\nb")],
    [("x-evil", "a\rb"), ("accept", "x")], [("x-evil\r\nx-injected", "1")], [("a:b", "1")],
    {"x-ok": "1", "x-evil": "\n"},
])
async def test_a_line_break_in_a_header_is_never_sent(client: UpstreamClient,
                                                       headers: object) -> None:
    async with raw_server(reply(OK)) as raw:
        with pytest.raises(UpstreamUnreachable, match="x-evil|a:b"):
            await client.request("GET", raw.url + "/x", headers, None)  # type: ignore[arg-type]
    assert raw.requests == []


async def test_a_timeout_closes_the_connection(client: UpstreamClient) -> None:
    silent = asyncio.Event()

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/slow" in request:
            await silent.wait()
            return False
        writer.write(OK)
        return True

    async with raw_server(answer) as raw:
        with pytest.raises(UpstreamTimeout):
            await client.request("GET", raw.url + "/slow", [], None, timeout=0.05)
        silent.set()
        assert (await client.request("GET", raw.url + "/after", [], None)).body == b"hello"
    assert raw.connections == 2  # the timed-out connection was not reused


@pytest.mark.parametrize(("url", "expected"), [
    ("http://h/a?b", (("http", "h", 80), "h", "/a?b")),
    ("https://Example.COM", (("https", "example.com", 443), "Example.COM", "/")),
    ("http://[::1]:8080?x=1", (("http", "::1", 8080), "[::1]:8080", "/?x=1")),
])
def test_urls_split_into_origin_host_and_target(url: str, expected: tuple) -> None:
    assert split_url(url) == expected


async def test_a_reused_connection_keeps_each_exchange_to_its_own_deadline(
        client: UpstreamClient) -> None:
    """One timer per connection: it is moved sooner for a shorter limit, and when it
    fires before a later exchange's deadline it is set again, not taken as expired."""
    gate = asyncio.Event()

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/gated" in request:
            await gate.wait()
        writer.write(OK)
        return True

    async with raw_server(answer) as raw:
        quick = await client.request("GET", raw.url + "/a", [], None, timeout=0.05)
        assert quick.body == b"hello"  # the connection's timer is now set 0.05 s ahead
        # opened after that timer, so it fires first (the loop orders its timers by time):
        asyncio.get_running_loop().call_later(0.2, gate.set)
        later = await client.request("GET", raw.url + "/gated", [], None, timeout=5)
        assert later.body == b"hello"  # the 5 s limit held, though the old timer fired
        gate.clear()
        with pytest.raises(UpstreamTimeout):  # a shorter limit on the same connection: its
            # own deadline, not the timer left at the 5 s one (that would outlast the gate)
            asyncio.get_running_loop().call_later(1.0, gate.set)
            response = await client.request("GET", raw.url + "/gated", [], None, timeout=0.05)
            raise AssertionError(f"answered {response.status} past a 0.05 s limit")
    assert raw.connections == 1
