"""An allowed read's SSE answer reaches the agent as the server sends it, event by event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from mcp.server.mcpserver import Context, MCPServer

from gateway.core import mcp
from tests.harness import AGENT_KEY, serve_app, started_gateway

POLICY = """\
version: 1
kind: mcp
upstream: slow
base_url: {url}/mcp
default: deny
rules:
  - id: reads
    match: {{tools: [slow_read]}}
    action: allow
    effect: read
"""


async def test_an_sse_answer_is_relayed_before_the_tool_has_finished(tmp_path: Path) -> None:
    release = asyncio.Event()
    server = MCPServer("slow")

    @server.tool()
    async def slow_read(ctx: Context) -> str:
        await ctx.report_progress(1, 2, "halfway")
        await release.wait()  # until the agent has seen the progress, through the gateway
        return "done"

    async with serve_app(server.streamable_http_app(), lifespan="on") as url, \
            started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                            {"slow.yaml": POLICY.format(url=url)}) as gw, \
            serve_app(gw.gateway.proxy_app()) as proxy, \
            httpx.AsyncClient(base_url=proxy, timeout=30,
                              headers={"X-Gateway-Key": AGENT_KEY,
                                       "accept": "application/json, text/event-stream"}) as agent:
        init = await agent.post("/slow", json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}})
        session = {"mcp-session-id": init.headers["mcp-session-id"],
                   "mcp-protocol-version": "2025-11-25"}
        await agent.post("/slow", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                         headers=session)
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "slow_read", "arguments": {}, "_meta": {"progressToken": "p"}}}
        async with agent.stream("POST", "/slow", json=call, headers=session) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-gateway-decision"] == "allow"
            seen = b""
            chunks = response.aiter_bytes()
            while b"halfway" not in seen:
                seen += await asyncio.wait_for(anext(chunks), 10)
            assert not release.is_set() and b'"result"' not in seen
            release.set()
            async for chunk in chunks:
                seen += chunk
        answer = mcp.response_in(seen, "text/event-stream", 2)
        assert answer is not None and answer["result"]["content"][0]["text"] == "done"
        progress = [m for m in mcp.sse_messages(seen) if m.get("method")]
        assert json.dumps(progress[0]["params"]["message"]) == '"halfway"'
