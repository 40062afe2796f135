"""An MCP server built with the SDK (the demo CRM's tools) behind an in-process gateway.

The MCP server runs on uvicorn on port 0; the gateway reaches it over real
sockets through its production clients. ``Rig.post`` sends raw JSON-RPC (built
with ``mcp_types``) to the gateway, for what the SDK's client does not do
(batches, mismatched routing headers, duplicate keys).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mcp_types
import pytest

from gateway.demo.crm import CRM, create_app
from gateway.demo.mcp import create_app as create_mcp_app
from tests.harness import Harness, serve_app, started_gateway

MODERN = "2026-07-28"
RULES = """\
version: 1
kind: mcp
upstream: tools
base_url: {url}/mcp
default: deny
rules:
  - id: lookups
    match: {{tools: ["get_*", "search_*"]}}
    action: allow
    effect: read
  - id: update-customer
    match: {{tools: [update_customer]}}
    action: allow
    capture: {{tool: get_customer, arguments: {{id: "{{arguments.id}}"}}}}
    undo: {{tool: update_customer, arguments: prior_fields}}
  - id: deals
    match: {{tools: [create_deal]}}
    action: hold
"""


@dataclass
class Rig:
    gw: Harness
    crm: CRM
    ids: Any = None

    def __post_init__(self) -> None:
        self.ids = itertools.count(1)

    def writes(self) -> list[tuple[str, str]]:
        return [(c["method"], c["path"]) for c in self.crm.log if c["method"] != "GET"]

    def envelope(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A 2026-07-28 request: self-contained, with the per-request ``_meta`` envelope."""
        meta = {mcp_types.PROTOCOL_VERSION_META_KEY: MODERN,
                mcp_types.CLIENT_CAPABILITIES_META_KEY: {}}
        request = mcp_types.JSONRPCRequest(jsonrpc="2.0", id=next(self.ids), method=method,
                                           params={**(params or {}), "_meta": meta})
        return request.model_dump(by_alias=True, exclude_none=True)

    async def post(self, body: Any, headers: dict[str, str] | None = None,
                   raw: bytes | None = None) -> httpx.Response:
        message = body if isinstance(body, dict) else {}
        routing = {"mcp-protocol-version": MODERN, "mcp-method": str(message.get("method"))}
        if message.get("method") == "tools/call":
            routing["mcp-name"] = message["params"]["name"]
        if not isinstance(body, dict) or "_meta" not in (message.get("params") or {}):
            routing = {}
        return await self.gw.agent.post(
            "/tools", content=raw if raw is not None else json.dumps(body).encode(),
            headers={"content-type": "application/json",
                     "accept": "application/json, text/event-stream", **routing,
                     **(headers or {})})

    async def call(self, tool: str, arguments: dict[str, Any],
                   headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.post(self.envelope("tools/call", {"name": tool, "arguments": arguments}),
                               headers)


@asynccontextmanager
async def rig(tmp_path: Path, *, stateless: bool, json_response: bool,
              rules: str = RULES, extra: dict[str, str] | None = None) -> AsyncIterator[Rig]:
    crm = create_app()
    app = create_mcp_app(crm, stateless=stateless, json_response=json_response)
    async with serve_app(app, lifespan="on") as url:
        policies = {"tools.yaml": rules.format(url=url), **(extra or {})}
        async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                                   policies) as gw:
            yield Rig(gw, crm)


@pytest.fixture
async def stateless_json(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig(tmp_path, stateless=True, json_response=True) as r:
        yield r


@pytest.fixture
async def sessions_sse(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig(tmp_path, stateless=False, json_response=False) as r:
        yield r

