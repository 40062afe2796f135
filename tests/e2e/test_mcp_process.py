"""MCP tool calls under the gateway's control, with real processes end to end.

Each test runs the demo CRM's tools over MCP (an ``MCPServer``, the SDK's
FastMCP, on streamable HTTP), once with sessions (``Mcp-Session-Id``, SSE
answers, the SDK client's initialize handshake) and once stateless (JSON
answers, the 2026-07-28 per-request protocol); a REST demo CRM beside it; a
``gateway serve`` process in front of both; and the SDK's own client as the agent.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.procs import (
    UVICORN,
    Proc,
    start_crm,
    start_gateway,
    wait_for_line,
    write_settings,
)
from tests.harness import AGENT_KEY, CRM_RULES, TOKENS, policy_text

ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}
MCP_POLICY = """\
version: 1
kind: mcp
upstream: crm-tools
base_url: {url}/mcp
default: deny
rules:
  - id: lookups
    match: {{tools: ["get_*", "search_*"]}}
    action: allow
    effect: read
  - id: update-customer
    match: {{tools: [update_customer], when: "!has(arguments.plan) || arguments.plan != 'free'"}}
    action: allow
    capture: {{tool: get_customer, arguments: {{id: "{{arguments.id}}"}}}}
    undo: {{tool: update_customer, arguments: prior_fields}}
    volatile: [updated_at]
  - id: big-deals
    match: {{tools: [create_deal], when: "arguments.amount > 10000"}}
    action: hold
    approval: {{wait: 30}}
  - id: deals
    match: {{tools: [create_deal]}}
    action: allow
    undo: none
tripwires:
  - {{id: bulk-tools, kind: writes, limit: 3, window: 60}}
"""


@dataclass
class Stack:
    proxy: str
    admin: str
    mcp_crm: str  # the MCP server's CRM (its REST face tells what the tools did)
    rest_crm: str
    mode: str  # how the SDK client connects

    def crm_requests(self, base: str) -> list[tuple[str, str]]:
        items = httpx.get(f"{base}/_demo/requests").json()["items"]
        return [(c["method"], c["path"]) for c in items]

    def customer(self, base: str, customer: str) -> dict[str, Any]:
        return httpx.get(f"{base}/customers/{customer}").json()

    def journal(self, **params: str) -> list[dict[str, Any]]:
        return httpx.get(f"{self.admin}/v1/journal", params=params, headers=ADMIN).json()["items"]


def start_mcp_crm(*flags: str) -> Proc:
    proc = subprocess.Popen([sys.executable, "-m", "gateway.demo", "--port", "0", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    match, _ = wait_for_line(proc, UVICORN, "stderr")
    return Proc(proc, (match.group(1),))


SERVERS = {"sessions": ((), "legacy"), "stateless": (("--stateless", "--json"), "auto")}


@pytest.fixture(params=sorted(SERVERS))
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    flags, mode = SERVERS[request.param]
    mcp_crm, rest_crm = start_mcp_crm(*flags), start_crm()
    gateway = None
    try:
        (tmp_path / "policies").mkdir()
        (tmp_path / "policies" / "crm.yaml").write_text(policy_text(rest_crm.urls[0], CRM_RULES))
        (tmp_path / "policies" / "crm-tools.yaml").write_text(
            MCP_POLICY.format(url=mcp_crm.urls[0]))
        gateway = start_gateway(write_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db"))
        yield Stack(*gateway.urls, mcp_crm.urls[0], rest_crm.urls[0], mode)
    finally:
        if gateway is not None:
            gateway.stop()
        mcp_crm.stop()
        rest_crm.stop()


@asynccontextmanager
async def agent(stack: Stack, run: str | None = None) -> AsyncIterator[Client]:
    """The SDK's client pointed at the gateway, with the agent key as a bearer token."""
    headers = {"Authorization": f"Bearer {AGENT_KEY}", **({"X-Agent-Run": run} if run else {})}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with Client(streamable_http_client(f"{stack.proxy}/crm-tools", http_client=http),
                          mode=stack.mode) as client:
            yield client


def text(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def test_tools_list_shows_what_the_agent_may_call_and_a_denied_call_is_a_tool_error(
        stack: Stack) -> None:
    async with agent(stack) as client:
        listed = sorted(t.name for t in (await client.list_tools()).tools)
        # delete_customer and create_customer: no rule, default deny; update (a when) and
        # create_deal (held above 10000) are callable, so listed
        assert listed == ["create_deal", "get_customer", "get_deal", "search_customers",
                          "update_customer"]
        denied = await client.call_tool("delete_customer", {"id": "cus_1"})
        assert denied.is_error and "denied by default" in text(denied)
        free = await client.call_tool("update_customer", {"id": "cus_1", "plan": "free"})
        assert free.is_error and "policy_denied" in text(free)
        read = await client.call_tool("get_customer", {"id": "cus_1"})
        assert not read.is_error and read.structured_content["plan"] == "pro"
    assert ("DELETE", "/customers/cus_1") not in stack.crm_requests(stack.mcp_crm)
    assert stack.customer(stack.mcp_crm, "cus_1")["plan"] == "pro"
    assert stack.journal() == []  # reads and refusals are not journaled...
    audit = httpx.get(f"{stack.admin}/v1/audit", headers=ADMIN).json()["items"]
    denials = [a for a in audit if a["action"] == "call.deny"]  # ... but audited
    assert [a["detail"]["path"] for a in denials] == ["delete_customer", "update_customer"]


async def test_a_write_is_captured_journaled_and_a_failed_tool_is_journaled_as_failed(
        stack: Stack) -> None:
    async with agent(stack, run="r-capture") as client:
        done = await client.call_tool("update_customer", {"id": "cus_1", "plan": "enterprise"})
        assert not done.is_error and done.structured_content["plan"] == "enterprise"
        failed = await client.call_tool("update_customer", {"id": "cus_1", "balance": -1.5})
        assert failed.is_error
    assert stack.crm_requests(stack.mcp_crm)[:2] == [("GET", "/customers/cus_1"),
                                                     ("PATCH", "/customers/cus_1")]
    newest, first = stack.journal(run="r-capture")
    assert (first["method"], first["path"], first["rule"], first["status"]) == (
        "tools/call", "update_customer", "update-customer", 200)
    assert first["prior"]["plan"] == "pro" and first["reversible"] is True
    assert first["undo"]["path"] == "update_customer"
    assert first["undo"]["body"] == {"id": "cus_1", "plan": "pro"}
    assert newest["state"] == "failed" and newest["status"] == 200
    assert "error" in (newest["error"] or "").lower()


async def test_a_held_tool_call_runs_once_when_approved(stack: Stack) -> None:
    async with agent(stack, run="r-hold") as client:
        waiting = asyncio.create_task(client.call_tool(
            "create_deal", {"customer_id": "cus_1", "title": "Big", "amount": 50000}))
        pending = await asyncio.to_thread(wait_for_pending, stack.admin)
        assert pending["method"] == "tools/call" and pending["path"] == "create_deal"
        approved = await asyncio.to_thread(
            httpx.post, f"{stack.admin}/v1/approvals/{pending['id']}/approve", json={},
            headers=ADMIN, timeout=60)
        assert approved.status_code == 200, approved.text
        result = await asyncio.wait_for(waiting, 60)
        assert not result.is_error and result.structured_content["amount"] == 50000
        again = httpx.post(f"{stack.admin}/v1/approvals/{pending['id']}/approve", json={},
                           headers=ADMIN)
        assert again.status_code == 409
    assert stack.crm_requests(stack.mcp_crm).count(("POST", "/deals")) == 1
    [entry] = stack.journal(run="r-hold")
    assert entry["path"] == "create_deal" and entry["decision"] == "hold"


def wait_for_pending(admin: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = httpx.get(f"{admin}/v1/approvals", params={"status": "pending"},
                          headers=ADMIN).json()["items"]
        if items:
            return items[0]
        time.sleep(0.05)  # polling an external process's queue, bounded by the deadline
    raise AssertionError("no pending approval appeared")


async def test_the_kill_switch_freezes_tool_writes_and_not_reads(stack: Stack) -> None:
    engaged = httpx.post(f"{stack.admin}/v1/killswitch/engage", json={"reason": "incident"},
                         headers=ADMIN)
    assert engaged.status_code == 200
    async with agent(stack) as client:
        frozen = await client.call_tool("update_customer", {"id": "cus_1", "plan": "pro"})
        assert frozen.is_error and "writes are frozen" in text(frozen) and "incident" in text(frozen)
        read = await client.call_tool("get_customer", {"id": "cus_1"})
        assert not read.is_error
    assert ("PATCH", "/customers/cus_1") not in stack.crm_requests(stack.mcp_crm)
    httpx.post(f"{stack.admin}/v1/killswitch/release", json={"reason": "over"}, headers=ADMIN)
    async with agent(stack) as client:
        assert not (await client.call_tool("update_customer", {"id": "cus_1"})).is_error


async def test_a_tripwire_over_tool_writes_engages_the_kill_switch(stack: Stack) -> None:
    async with agent(stack) as client:
        for plan in ("a", "b", "c"):
            done = await client.call_tool("update_customer", {"id": "cus_2", "plan": plan})
            assert not done.is_error
        tripped = await client.call_tool("update_customer", {"id": "cus_2", "plan": "d"})
        assert tripped.is_error and "tripwire bulk-tools" in text(tripped)
        assert not (await client.call_tool("get_customer", {"id": "cus_2"})).is_error
    assert stack.customer(stack.mcp_crm, "cus_2")["plan"] == "c"
    state = httpx.get(f"{stack.admin}/v1/killswitch", headers=ADMIN).json()
    assert state["engaged"] and state["freezes"][0]["by"] == "tripwire:bulk-tools"


async def test_rollback_of_a_run_mixing_rest_and_mcp_restores_both_upstreams(stack: Stack) -> None:
    rest = httpx.patch(f"{stack.proxy}/crm/customers/cus_1", json={"plan": "free"},
                       headers={"X-Gateway-Key": AGENT_KEY, "X-Agent-Run": "mixed"})
    assert rest.status_code == 200
    async with agent(stack, run="mixed") as client:
        done = await client.call_tool("update_customer", {"id": "cus_2", "plan": "pro",
                                                          "balance": 99})
        assert not done.is_error
    rest = httpx.patch(f"{stack.proxy}/crm/customers/cus_3", json={"balance": 7},
                       headers={"X-Gateway-Key": AGENT_KEY, "X-Agent-Run": "mixed"})
    assert rest.status_code == 200
    plan = httpx.post(f"{stack.admin}/v1/rollback", json={"run": "mixed", "dry_run": False},
                      headers=ADMIN, timeout=60).json()["plan"]
    assert [(s["method"], s["path"], s["status"]) for s in plan["steps"]] == [
        ("PUT", "/customers/cus_3", "applied"),
        ("tools/call", "update_customer", "applied"),
        ("PUT", "/customers/cus_1", "applied")]
    assert stack.customer(stack.rest_crm, "cus_1")["plan"] == "pro"
    assert stack.customer(stack.rest_crm, "cus_3")["balance"] == 50
    tools_side = stack.customer(stack.mcp_crm, "cus_2")
    assert (tools_side["plan"], tools_side["balance"]) == ("enterprise", 0)
