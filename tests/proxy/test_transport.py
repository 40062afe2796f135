"""The proxy's transport behaviour against a scripted real upstream:
streaming both ways, timeouts, unreachable upstreams, response header hygiene."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import policy_text, serve_app, started_gateway

RULES = """
- id: all
  match: {path: "/**"}
  action: allow
  capture: false
"""


class Scripted:
    """A raw ASGI upstream whose answers the test controls."""

    def __init__(self) -> None:
        self.first_chunk_seen = asyncio.Event()
        self.release = asyncio.Event()
        self.received: list[tuple[str, int]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.received.append((scope["path"], size))
        path = scope["path"]
        if path == "/stream":  # a download the gateway must relay before it ends
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")]})
            await send({"type": "http.response.body", "body": b"a" * 65536, "more_body": True})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"b" * 65536, "more_body": False})
            return
        if path == "/slow":
            await self.release.wait()
        headers = [(b"content-type", b"application/json"), (b"x-gateway-decision", b"forged"),
                   (b"x-gateway-evil", b"1"), (b"x-upstream", b"kept"),
                   (b"connection", b"x-hop"), (b"x-hop", b"dropped")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


@pytest.fixture
async def scripted():
    app = Scripted()
    async with serve_app(app) as url:
        yield app, url
        app.release.set()  # let held requests finish, or the server's shutdown waits on them


async def test_downloads_stream_before_the_upstream_finishes(tmp_path: Path, scripted) -> None:
    app, url = scripted
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"up.yaml": policy_text(url, RULES, upstream="up")}) as gw, \
            serve_app(gw.gateway.proxy_app()) as proxy, \
            httpx.AsyncClient(base_url=proxy, headers=dict(gw.agent.headers)) as agent, \
            agent.stream("GET", "/up/stream") as response:
        # a real socket: httpx's ASGITransport would buffer the whole response
        chunks = response.aiter_raw()
        first = await chunks.__anext__()
        assert first.startswith(b"a")  # arrived while the upstream still holds the rest
        app.release.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert len(first) + len(rest) == 131072 and rest.endswith(b"b")


async def test_uploads_stream_through_for_reads(tmp_path: Path, scripted) -> None:
    app, url = scripted

    async def body():
        for _ in range(32):
            yield b"x" * 32768

    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"up.yaml": policy_text(url, RULES, upstream="up")}) as gw:
        response = await gw.agent.request("GET", "/up/echo", content=body())
        assert response.status_code == 200
    assert app.received[-1] == ("/echo", 32 * 32768)


async def test_upstream_response_headers_are_cleaned(tmp_path: Path, scripted) -> None:
    _, url = scripted
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"up.yaml": policy_text(url, RULES, upstream="up")}) as gw:
        response = await gw.agent.get("/up/plain")
    assert response.headers["x-gateway-decision"] == "allow"
    assert "x-gateway-evil" not in response.headers and "x-hop" not in response.headers
    assert response.headers["x-upstream"] == "kept"
    head = response.headers.get_list("x-gateway-decision")
    assert head == ["allow"]


async def test_upstream_timeout_is_504_and_journaled_as_unknown(tmp_path: Path, scripted) -> None:
    _, url = scripted
    text = policy_text(url, RULES, upstream="up", extra="timeout: 0.2\n")
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"up.yaml": text}) as gw:
        response = await gw.agent.post("/up/slow", json={"a": 1})
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        [entry] = await gw.journal()
        # it may have landed (CONTRACT 2026-12b): never "failed"
        assert entry["state"] == "unknown" and "timed out" in entry["error"]


async def test_unreachable_upstream_is_502(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = policy_text(f"http://127.0.0.1:{port}", RULES, upstream="up")
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"up.yaml": text}) as gw:
        response = await gw.agent.get("/up/x")
        assert (response.status_code, response.json()["error"]["code"]) == (
            502, "upstream_unreachable")
        assert response.headers["x-gateway-decision"] == "error"


async def test_an_oversized_write_is_refused_before_anything_is_sent(tmp_path: Path,
                                                                     scripted) -> None:
    app, url = scripted
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"up.yaml": policy_text(url, RULES, upstream="up")},
                               max_write_body=1000) as gw:
        response = await gw.agent.post("/up/big", content=b"x" * 5000)
        assert response.status_code == 413
    assert app.received == []
