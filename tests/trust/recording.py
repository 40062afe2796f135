"""A recording upstream and a gateway on a real socket, for the trust suite.

``Recording`` is a raw ASGI upstream that logs every request that reaches it
(method, raw target, headers, body) before answering, so a row can prove that
nothing got through. ``trusted_gateway`` starts it under uvicorn on port 0,
a gateway in front of it (SQLite), and serves the gateway's proxy listener on
a real socket with the production server settings (``gateway.server``), so
rows can speak raw HTTP/1.1 to it: paths exactly as written, pipelining,
``Expect: 100-continue``, slow clients.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.server import server_for
from tests.harness import AGENT_KEY, Harness, policy_text, serve_app, served, started_gateway


@dataclass
class Arrival:
    method: str
    target: str  # raw path and query, as the upstream received them
    headers: dict[str, str]
    body: bytes


@dataclass
class Recording:
    arrivals: list[Arrival] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        self.arrivals.append(Arrival(scope["method"], target,
                                     {k.decode("latin-1"): v.decode("latin-1")
                                      for k, v in scope["headers"]}, body))
        data = json.dumps({"id": target.rsplit("/", 1)[-1], "amount": 1}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    def reached(self, method: str | None = None) -> list[Arrival]:
        return [a for a in self.arrivals if method is None or a.method == method]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Trusted:
    harness: Harness
    upstream: Recording
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def send(self, head: str, body: bytes = b"", key: bool = True) -> Reply:
        """One request on its own connection (``Connection: close``); ``head`` is the
        request line and any headers, written byte for byte (latin-1)."""
        lines = head.rstrip("\r\n").split("\n")
        extra = ["Host: gateway", "Connection: close"]
        if key:
            extra.append(f"X-Gateway-Key: {AGENT_KEY}")
        if body:
            extra.append(f"Content-Length: {len(body)}")
        raw = "\r\n".join([lines[0].rstrip("\r"), *(x.rstrip("\r") for x in lines[1:]), *extra])
        reader, writer = await self.connect()
        writer.write(raw.encode("latin-1") + b"\r\n\r\n" + body)
        await writer.drain()
        data = await read_all(reader)
        writer.close()
        replies = parse_replies(data)
        assert len(replies) == 1, data
        return replies[0]


async def read_all(reader: asyncio.StreamReader, deadline: float = 10.0) -> bytes:
    """Everything until the server closes (or ``deadline`` seconds: then what came)."""
    chunks = []
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        remaining = end - loop.time()
        if remaining <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


_HEAD = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n")


def parse_replies(data: bytes) -> list[Reply]:
    """Responses in ``data``, in order (Content-Length framing; 1xx have no body)."""
    replies, at = [], 0
    while True:
        match = _HEAD.match(data, at)
        if match is None:
            return replies
        headers = {}
        for line in match.group(2).decode("latin-1").split("\r\n"):
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        status = int(match.group(1))
        body = data[match.end():match.end() + size] if status >= 200 else b""
        replies.append(Reply(status, headers, body))
        at = match.end() + len(body)


@asynccontextmanager
async def trusted_gateway(tmp_path: Path, rules: str, default: str = "deny", extra: str = "",
                          **overrides: Any) -> AsyncIterator[Trusted]:
    upstream = Recording()
    async with serve_app(upstream) as url:
        policies = {"crm.yaml": policy_text(url, rules, default=default, extra=extra)}
        (tmp_path / "db").mkdir(exist_ok=True)
        database = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'gateway.db'}"
        async with started_gateway(tmp_path, database, policies, **overrides) as harness:
            server = server_for(harness.gateway.proxy_app(), harness.gateway.settings)
            async with served(server) as port:  # the production listener, on a real socket
                yield Trusted(harness, upstream, port)
