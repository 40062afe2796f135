"""Hostile upstream responses (issue 17 item 14).

A response, reads included, ends within the policy's ``timeout`` unless its
rule says ``stream: true``; an upstream ``101 Switching Protocols`` is never
relayed (502). The upstream is a raw socket server, so it can misbehave at
will: an endless chunked body, a 101 then a tunnel. The agent speaks raw HTTP
to a real gateway socket and waits, with a bound, for the answer to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.server import server_for
from tests.harness import AGENT_KEY, policy_text, served, started_gateway, until

RULES = """
- id: events
  match: {methods: [GET], path: "/events"}
  action: allow
  stream: true
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
"""
BOUND = 30.0  # how long the agent waits for an answer to end before calling it endless

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Hostile:
    """Answers every request with ``CHUNKS`` chunks 0.1 s apart (None: forever), or a 101."""

    def __init__(self, chunks: int | None = None, upgrade: bool = False) -> None:
        self.chunks, self.upgrade = chunks, upgrade
        self.closed_by_peer = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            if self.upgrade:
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
                await writer.drain()
                await reader.read()  # a tunnel now, until the gateway hangs up
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                sent = 0
                while self.chunks is None or sent < self.chunks:
                    writer.write(b"7\r\ndata: x\r\n")
                    await writer.drain()
                    sent += 1
                    await asyncio.sleep(0.1)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        self.closed_by_peer.set()
        writer.close()


@asynccontextmanager
async def hostile_gateway(tmp_path: Path, upstream: Hostile) -> AsyncIterator[int]:
    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        text = policy_text(f"http://127.0.0.1:{port}", RULES, extra="timeout: 1\n")
        async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                                   {"crm.yaml": text}) as harness:
            proxy = server_for(harness.gateway.proxy_app(), harness.gateway.settings)
            async with served(proxy) as gateway_port:
                yield gateway_port
    finally:
        server.close()


async def answer(port: int, path: str) -> tuple[bytes, bool]:
    """What the agent got for ``GET /crm{path}``, and whether it ended (within BOUND)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /crm{path} HTTP/1.1\r\nHost: gateway\r\nX-Gateway-Key: {AGENT_KEY}\r\n"
                 "Connection: close\r\n\r\n".encode())
    chunks: list[bytes] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + BOUND
    ended = False
    while loop.time() < end:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), end - loop.time())
        except TimeoutError:
            break
        except ConnectionError:
            ended = True
            break
        if not chunk:
            ended = True
            break
        chunks.append(chunk)
    writer.close()
    return b"".join(chunks), ended


async def test_an_endless_body_ends_within_the_timeout(tmp_path: Path) -> None:
    upstream = Hostile(chunks=None)
    async with hostile_gateway(tmp_path, upstream) as port:
        data, ended = await answer(port, "/feed")
        assert ended, f"still relaying after {BOUND} s"
        assert data.startswith(b"HTTP/1.1 200")
        assert not data.endswith(b"0\r\n\r\n")  # cut off, not a complete answer
        await until(upstream.closed_by_peer.is_set, "the gateway hangs up on the upstream")


async def test_a_rule_that_streams_relays_past_the_timeout(tmp_path: Path) -> None:
    upstream = Hostile(chunks=25)  # 2.5 s of events, under a 1 s timeout
    async with hostile_gateway(tmp_path, upstream) as port:
        data, ended = await answer(port, "/events")
        assert ended
        assert data.startswith(b"HTTP/1.1 200") and data.count(b"data: x") == 25
        assert data.endswith(b"0\r\n\r\n")


@pytest.mark.parametrize("path", ["/feed", "/events"])
async def test_a_101_is_not_relayed(tmp_path: Path, path: str) -> None:
    upstream = Hostile(upgrade=True)
    async with hostile_gateway(tmp_path, upstream) as port:
        data, ended = await answer(port, path)
        assert ended
        assert data.startswith(b"HTTP/1.1 502"), data[:200]
        await until(upstream.closed_by_peer.is_set, "the gateway hangs up on the upstream")
