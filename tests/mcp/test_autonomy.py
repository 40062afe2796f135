"""Modes for MCP tool calls, with the SDK's own client as the agent (it checks a tool
result's structured content against the tool's output schema)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import AGENT_KEY, TOKENS, serve_app
from tests.mcp.conftest import Rig, rig

ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
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
    mode: shadow
    capture: {{tool: get_customer, arguments: {{id: "{{arguments.id}}"}}}}
    undo: {{tool: update_customer, arguments: prior_fields}}
  - id: deals
    match: {{tools: [create_deal]}}
    action: hold
    mode: shadow
  - id: no-deletes
    match: {{tools: [delete_customer]}}
    action: deny
    mode: observe
  - id: customers-later
    match: {{tools: [create_customer]}}
    action: delay
    delay: {{seconds: 0.2}}
"""


@asynccontextmanager
async def agent(r: Rig, run: str) -> AsyncIterator[Client]:
    async with serve_app(r.gw.gateway.proxy_app()) as proxy, \
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {AGENT_KEY}",
                                        "X-Agent-Run": run}, timeout=30) as http, \
            Client(streamable_http_client(f"{proxy}/tools", http_client=http),
                   mode="legacy") as client:
        yield client


async def journal(r: Rig, run: str) -> list[dict[str, Any]]:
    response = await r.gw.admin.get("/v1/journal", params={"run": run}, headers=ADMIN)
    return response.json()["items"]


async def test_a_shadowed_tool_call_answers_a_projected_result_and_is_never_sent(
        tmp_path: Path) -> None:
    async with rig(tmp_path, stateless=False, json_response=False, rules=RULES) as r:
        before = dict(r.crm.data["customers"]["cus_1"])
        async with agent(r, "mcp-shadow") as client:
            updated = await client.call_tool("update_customer", {"id": "cus_1", "plan": "free"})
            assert not updated.is_error
            assert updated.structured_content == {**before, "plan": "free"}
            deal = await client.call_tool("create_deal", {"customer_id": "cus_1",
                                                          "title": "Big", "amount": 50000})
            assert not deal.is_error and deal.structured_content["id"].startswith("shadow-")
            read = await client.call_tool("get_customer", {"id": "cus_1"})
            assert read.structured_content["plan"] == before["plan"]  # nothing changed
        assert r.writes() == [] and r.crm.data["customers"]["cus_1"] == before
        raw = await r.call("update_customer", {"id": "cus_2", "plan": "free"})
        assert raw.headers["x-gateway-decision"] == "shadow"
        deal_entry, update = await journal(r, "mcp-shadow")  # newest first
        assert (update["method"], update["path"], update["state"], update["would_decide"]) == (
            "tools/call", "update_customer", "shadow", "allow")
        assert update["prior"]["plan"] == before["plan"]
        assert update["changes"] == [{"field": "plan", "before": before["plan"],
                                      "after": "free"}]
        assert (deal_entry["path"], deal_entry["would_decide"]) == ("create_deal", "hold")
        promoted = await r.gw.admin.post("/v1/shadow/promote",
                                         json={"entries": [update["id"]]}, headers=ADMIN)
        [held] = promoted.json()["items"]
        approved = await r.gw.admin.post(f"/v1/approvals/{held['id']}/approve", json={},
                                         headers=ADMIN)
        assert approved.status_code == 200 and approved.json()["status"] == "executed"
        assert r.writes() == [("PATCH", "/customers/cus_1")]
        assert r.crm.data["customers"]["cus_1"]["plan"] == "free"


async def test_an_observed_tool_call_is_sent_though_the_rule_denies_it(tmp_path: Path) -> None:
    async with rig(tmp_path, stateless=False, json_response=False, rules=RULES) as r:
        async with agent(r, "mcp-observe") as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            assert "delete_customer" in listed  # observe: the deny is not enforced
            deleted = await client.call_tool("delete_customer", {"id": "cus_3"})
            assert not deleted.is_error
        assert r.writes() == [("DELETE", "/customers/cus_3")]
        assert "cus_3" not in r.crm.data["customers"]
        [entry] = await journal(r, "mcp-observe")
        assert (entry["path"], entry["decision"], entry["mode"], entry["would_decide"],
                entry["state"]) == ("delete_customer", "allow", "observe", "deny", "completed")
        await r.gw.gateway.audit.flush()
        audit = (await r.gw.admin.get("/v1/audit", headers=ADMIN)).json()["items"]
        [record] = [a for a in audit if a["action"].startswith("call.")]
        assert record["action"] == "call.allow"
        assert (record["detail"]["rule"], record["detail"]["would_decide"]) == (
            "no-deletes", "deny")


async def test_a_delayed_tool_call_is_held_then_runs_once_by_itself(tmp_path: Path) -> None:
    async with rig(tmp_path, stateless=True, json_response=True, rules=RULES) as r:
        response = await r.call("create_customer", {"name": "Later Ltd", "email": "l@x.io",
                                                    "plan": "pro"})
        assert response.headers["x-gateway-decision"] == "hold"
        result = response.json()["result"]
        assert result["isError"] is True and "runs by itself at" in result["content"][0]["text"]
        assert r.writes() == []
        [held] = (await r.gw.admin.get("/v1/approvals", headers=ADMIN)).json()["items"]
        assert (held["kind"], held["path"], held["method"]) == ("delay", "create_customer",
                                                               "tools/call")
        deadline = asyncio.get_running_loop().time() + 15
        while r.writes() == [] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)  # polling, bounded by the deadline
        assert r.writes() == [("POST", "/customers")]
        await r.gw.gateway.approvals.run_due()
        assert r.writes() == [("POST", "/customers")]  # once
        [entry] = (await r.gw.admin.get("/v1/journal", headers=ADMIN)).json()["items"]
        assert (entry["decision"], entry["path"], entry["approval"]["id"]) == (
            "delay", "create_customer", held["id"])
