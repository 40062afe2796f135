"""The fault-matrix cell "MCP tool call cut off once sent", end to end: a real MCP server
(the demo CRM's tools, the SDK's FastMCP over streamable HTTP, stateless with JSON
answers), a ``Cutter`` in front of it that passes the ``update_customer`` call on and
closes both connections when the server's answer starts (the call landed, its answer
is lost), a real ``gateway serve`` (SQLite and PostgreSQL) in front of that, and the
SDK's own client as the agent.

The contract: the entry is ``unknown`` (never ``failed``), the call is not sent again,
and rollback never skips it (a tool call's effect cannot be told from its arguments, so
it is listed irreversible with its prior and arguments, not reconciled).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.procs import Proc, start_gateway, write_settings
from tests.e2e.test_mcp_process import MCP_POLICY, start_mcp_crm
from tests.faults.cutter import Cutter
from tests.harness import AGENT_KEY, TOKENS

ADMIN = {"Authorization": f"Bearer {TOKENS['admin']}"}


@pytest.fixture
def server() -> Iterator[str]:
    crm = start_mcp_crm("--stateless", "--json")
    yield crm.urls[0]
    crm.stop()


@pytest.fixture
def cutter(server: str) -> Iterator[Cutter]:
    where = urlsplit(server)
    with Cutter(where.hostname or "127.0.0.1", where.port or 80, b'"update_customer"') as cut:
        yield cut


@pytest.fixture
def gateway(tmp_path: Path, store_url: str, cutter: Cutter) -> Iterator[Proc]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm-tools.yaml").write_text(MCP_POLICY.format(url=cutter.url))
    started = start_gateway(write_settings(tmp_path, store_url))
    yield started
    started.stop()


async def call_tool(proxy: str, tool: str, arguments: dict[str, Any]) -> Any:
    """The SDK's client through the gateway: the tool result, or the error it raised."""
    headers = {"Authorization": f"Bearer {AGENT_KEY}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        try:
            async with Client(streamable_http_client(f"{proxy}/crm-tools", http_client=http),
                              mode="auto") as client:
                return await client.call_tool(tool, arguments)
        except Exception as exc:  # noqa: BLE001 - what the agent saw, for the assertions
            return exc


def journal(admin: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{admin}/v1/journal", headers=ADMIN)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def requests_seen(server: str) -> list[tuple[str, str]]:
    items = httpx.get(f"{server}/_demo/requests").json()["items"]
    return [(c["method"], c["path"]) for c in items]


async def test_a_tool_call_cut_off_once_sent_is_unknown_and_never_skipped(
        server: str, cutter: Cutter, gateway: Proc) -> None:
    proxy, admin = gateway.urls
    before = httpx.get(f"{server}/customers/cus_1").json()
    assert before["plan"] == "pro"
    result = await call_tool(proxy, "update_customer", {"id": "cus_1", "plan": "enterprise"})
    assert cutter.cut.is_set(), result  # the server answered; the answer never came back
    # the agent was not told it worked
    assert isinstance(result, Exception) or result.is_error, result
    # it landed, once: never sent again
    assert httpx.get(f"{server}/customers/cus_1").json()["plan"] == "enterprise"
    assert requests_seen(server).count(("PATCH", "/customers/cus_1")) == 1
    assert cutter.passed == 1
    [entry] = journal(admin)
    assert (entry["path"], entry["state"]) == ("update_customer", "unknown"), entry
    assert entry["prior"]["plan"] == "pro"
    # rollback never skips it: a tool's effect cannot be told from its arguments, so the
    # entry is listed irreversible with everything known (the prior, the arguments), and
    # nothing is sent
    planned = httpx.post(f"{admin}/v1/rollback", json={"entries": [entry["id"]],
                                                       "dry_run": False},
                         headers=ADMIN, timeout=60)
    assert planned.status_code == 200, planned.text
    plan = planned.json()["plan"]
    assert plan["steps"] == [] and plan["skipped"] == [], plan
    [listed] = plan["irreversible"]
    assert listed["entry"] == entry["id"] and "outcome unknown" in listed["reason"], listed
    assert listed["prior"]["plan"] == "pro"
    assert '"enterprise"' in listed["request_body"]
    assert requests_seen(server).count(("PATCH", "/customers/cus_1")) == 1
    [entry] = journal(admin)
    assert entry["state"] == "unknown"
