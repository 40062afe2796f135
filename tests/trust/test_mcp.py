"""MCP in the trust suite (issue 17 items 3, 8 and 11).

A recording MCP upstream (raw JSON-RPC over HTTP, with sessions) stands behind
a gateway. Rows: a tool's text result with a secret in it is journaled
redacted (``/v1/journal`` and the database file); a session belongs to the
agent that opened it, so another agent's use of its id (a tool call, the
stream, its end) is 404 and never reaches the upstream; a denied
``tools/call`` sent as a notification is refused without a 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import OTHER_KEY, Harness, serve_app, started_gateway

SECRET = "sk-live-0123456789abcdef"
RULES = """\
version: 1
kind: mcp
upstream: tools
base_url: {url}/mcp
default: deny
rules:
  - id: keys
    match: {{tools: [rotate_key]}}
    action: allow
  - id: reads
    match: {{tools: ["get_*"]}}
    action: allow
    effect: read
  - id: small-refunds
    match: {{tools: [refund], when: "arguments.amount <= 1000"}}
    action: allow
"""


@dataclass
class McpUpstream:
    """JSON-RPC over HTTP: ``initialize`` opens session ``s-1``; ``rotate_key`` answers
    with a text result that carries a secret; every request is recorded."""

    seen: list[tuple[str, str | None, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # each request's

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        request = json.loads(body) if body else None
        self.seen.append((scope["method"], headers.get("mcp-session-id"), request))
        self.headers.append(headers)
        out: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        if scope["method"] != "POST" or not isinstance(request, dict) or "id" not in request:
            await send({"type": "http.response.start", "status": 202, "headers": out})
            await send({"type": "http.response.body", "body": b""})
            return
        if request["method"] == "initialize":
            out.append((b"mcp-session-id", b"s-1"))
            result: Any = {"protocolVersion": "2025-06-18", "capabilities": {},
                           "serverInfo": {"name": "keys", "version": "1"}}
        else:
            text = json.dumps({"id": "k1", "api_key": SECRET})
            result = {"content": [{"type": "text", "text": text},
                                  {"type": "text", "text": f"token={SECRET}"}]}
        data = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": data})


@asynccontextmanager
async def mcp_gateway(tmp_path: Path) -> AsyncIterator[tuple[Harness, McpUpstream]]:
    upstream = McpUpstream()
    async with serve_app(upstream) as url:
        async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                                   {"tools.yaml": RULES.format(url=url)}) as gw:
            yield gw, upstream


HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def call(tool: str, ident: int | None = 1) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": "tools/call",
                               "params": {"name": tool, "arguments": {"id": "k1"}}}
    if ident is not None:
        message["id"] = ident
    return json.dumps(message).encode()


async def test_a_secret_in_a_tool_text_result_is_journaled_redacted(tmp_path: Path) -> None:
    async with mcp_gateway(tmp_path) as (gw, upstream):
        reply = await gw.agent.post("/tools", content=call("rotate_key"), headers=HEADERS)
        assert reply.status_code == 200, reply.text
        assert SECRET in reply.text  # the agent gets its answer whole
        await gw.gateway.pipeline.settled()
        [entry] = await gw.journal()
        assert entry["response"]["body"] is not None
        assert SECRET not in json.dumps(entry)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("gw.db*"))
    assert SECRET.encode() not in stored


async def _open_session(gw: Harness) -> str:
    init = await gw.agent.post("/tools", headers=HEADERS, content=json.dumps({
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}).encode())
    assert init.status_code == 200, init.text
    return init.headers["mcp-session-id"]


SESSION_USES = [
    # (row id, method, body)
    ("tool-call", "POST", call("get_key")),
    ("stream", "GET", b""),
    ("end", "DELETE", b""),
]


@pytest.mark.parametrize(("method", "body"), [r[1:] for r in SESSION_USES],
                         ids=[r[0] for r in SESSION_USES])
async def test_another_agents_session_is_not_found(tmp_path: Path, method: str,
                                                   body: bytes) -> None:
    async with mcp_gateway(tmp_path) as (gw, upstream):
        session = await _open_session(gw)
        before = len(upstream.seen)
        reply = await gw.agent.request(method, "/tools", content=body, headers={
            **HEADERS, "mcp-session-id": session, "X-Gateway-Key": OTHER_KEY})
        assert reply.status_code == 404, reply.text
        assert upstream.seen[before:] == []
        own = await gw.agent.request(method, "/tools", content=body,
                                     headers={**HEADERS, "mcp-session-id": session})
        assert own.status_code in (200, 202), own.text  # its owner still may
        assert [s[1] for s in upstream.seen[before:]] == ["s-1"]


async def test_a_denied_tool_call_sent_as_a_notification_is_not_an_error(
        tmp_path: Path) -> None:
    async with mcp_gateway(tmp_path) as (gw, upstream):
        reply = await gw.agent.post("/tools", content=call("drop_all", ident=None),
                                    headers=HEADERS)
        assert reply.status_code == 202, reply.text
        assert reply.headers["x-gateway-decision"] == "deny"
        assert upstream.seen == []
        batch = b"[" + call("drop_all", ident=None) + b"," + call("get_key", 7) + b"]"
        both = await gw.agent.post("/tools", content=batch, headers=HEADERS)
        assert both.status_code == 200, both.text
        assert [a["id"] for a in both.json()] == [7]
        assert [s[2]["params"]["name"] for s in upstream.seen] == ["get_key"]


@pytest.mark.parametrize("header", ["Mcp_Method", "mcp_name", "Mcp_Session_Id",
                                    "Mcp-Param_Region"])
async def test_an_mcp_header_spelt_with_underscores_is_refused(tmp_path: Path,
                                                              header: str) -> None:
    """WSGI and CGI read ``Mcp_Method`` as ``Mcp-Method``, which must agree with the
    body; spelt with ``_`` the gateway would not compare it (a session id so spelt
    would skip its owner's check). 400, for a message, the stream and its end."""
    async with mcp_gateway(tmp_path) as (gw, upstream):
        for method, body in (("POST", call("rotate_key")), ("GET", b""), ("DELETE", b"")):
            reply = await gw.agent.request(method, "/tools", content=body,
                                           headers={**HEADERS, header: "get_key"})
            assert reply.status_code == 400, (method, reply.text)
        assert upstream.seen == []


def routed(tool: str) -> dict[str, str]:
    return {"mcp-method": "tools/call", "mcp-name": tool}


BATCHES = [
    # (row id, the batch's routing headers): the batch holds rotate_key (a write) and
    # get_key (a read); each message is sent on its own under the batch's headers
    ("name-of-the-read", routed("get_key")),
    ("name-of-the-write", routed("rotate_key")),
    ("another-method", {"mcp-method": "tools/list"}),
    ("param-header", {"mcp-param-region": "eu"}),
]


@pytest.mark.parametrize("headers", [r[1] for r in BATCHES], ids=[r[0] for r in BATCHES])
async def test_a_batch_cannot_carry_routing_headers_its_messages_disagree_with(
        tmp_path: Path, headers: dict[str, str]) -> None:
    """``Mcp-Method``/``Mcp-Name`` let intermediaries and servers route without reading the
    body; the gateway compared them with a lone message only, so each message of a batch
    went on under headers naming another (a read's name on a write). 400, nothing sent."""
    async with mcp_gateway(tmp_path) as (gw, upstream):
        batch = b"[" + call("get_key", 1) + b"," + call("rotate_key", 2) + b"]"
        reply = await gw.agent.post("/tools", content=batch, headers={**HEADERS, **headers})
        assert reply.status_code == 400, reply.text
        assert upstream.seen == []


async def test_a_batch_whose_messages_agree_with_its_routing_headers_goes_on(
        tmp_path: Path) -> None:
    async with mcp_gateway(tmp_path) as (gw, upstream):
        batch = b"[" + call("get_key", 1) + b"," + call("get_key", 2) + b"]"
        reply = await gw.agent.post("/tools", content=batch,
                                    headers={**HEADERS, **routed("get_key")})
        assert reply.status_code == 200, reply.text
        assert [a["id"] for a in reply.json()] == [1, 2]
        assert [(h["mcp-method"], h["mcp-name"]) for h in upstream.headers] == [
            ("tools/call", "get_key")] * 2
        plain = b"[" + call("get_key", 3) + b"," + call("rotate_key", 4) + b"]"
        unrouted = await gw.agent.post("/tools", content=plain, headers=HEADERS)
        assert unrouted.status_code == 200, unrouted.text
        assert [s[2]["params"]["name"] for s in upstream.seen[2:]] == ["get_key", "rotate_key"]


async def test_a_number_a_when_compares_must_survive_a_double(tmp_path: Path) -> None:
    """Item 13 for tool arguments: 1000.0000000000000001 is read as 1000.0."""
    async with mcp_gateway(tmp_path) as (gw, upstream):
        body = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"refund",'
                b'"arguments":{"amount":1000.0000000000000001}}}')
        reply = await gw.agent.post("/tools", content=body, headers=HEADERS)
        assert reply.status_code == 400, reply.text
        assert upstream.seen == []
        exact = body.replace(b"1000.0000000000000001", b"1000.00")
        allowed = await gw.agent.post("/tools", content=exact, headers=HEADERS)
        assert allowed.status_code == 200, allowed.text
        assert [s[2]["params"]["arguments"] for s in upstream.seen] == [{"amount": 1000.0}]


async def test_the_recording_upstream_answers_without_a_gateway() -> None:
    """The rows above depend on it: a session is opened, and a tool answers a secret."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(McpUpstream()),
                                 base_url="http://up") as client:
        init = await client.post("/mcp", content=b'{"jsonrpc":"2.0","id":0,'
                                                 b'"method":"initialize"}')
        assert init.headers["mcp-session-id"] == "s-1"
        assert SECRET in (await client.post("/mcp", content=call("rotate_key"))).text
