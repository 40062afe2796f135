"""The fault matrix's MCP rows that need a process killed or two processes: a real MCP
server (the demo CRM's tools, stateless with JSON answers), real ``gateway serve``
processes on SQLite and PostgreSQL, the SDK's own client as the agent.

- Killed between a tool call's intent and its outcome (the server applied the call,
  its answer held back by a ``Cutter``): after a restart the entry is ``unknown``
  (never ``failed``, never left ``intent``), its prior kept, one audit record names
  it (recovery's), the chain verifies, and the call was sent once.
- Killed while an approved tool call is out (the server ran it, its answer held back):
  once the claim's lease lapses, the held call and its entry are ``unknown``, and the
  call was sent once (the sweeper never runs it again).
- A held tool call approved on two processes at once runs once: one approval wins,
  the rest are 409, the server sees one call, and the agent waiting on the first
  process gets the result whichever process ran it.
- An approved tool call cut off once the server ran it (its answer lost) is
  ``unknown``, the held call and its entry alike, and is not sent again; so is a
  rollback's compensating tool call (its step failed, "the outcome is unknown").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.procs import Proc, start_gateway, write_settings
from tests.e2e.test_approvals_process import approve_all
from tests.e2e.test_mcp_process import MCP_POLICY, start_mcp_crm, wait_for_pending
from tests.faults.cutter import Cutter
from tests.faults.procs_support import Gateway, in_thread
from tests.faults.test_mcp_cut_off import call_tool, requests_seen
from tests.harness import poll


@pytest.fixture
def server() -> Iterator[str]:
    crm = start_mcp_crm("--stateless", "--json")
    yield crm.urls[0]
    crm.stop()


def policies(tmp_path: Path, url: str) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "crm-tools.yaml").write_text(MCP_POLICY.format(url=url))


async def test_a_tool_call_out_when_the_gateway_was_killed_is_unknown_and_audited_once(
        tmp_path: Path, store_url: str, server: str) -> None:
    where = urlsplit(server)
    with Cutter(where.hostname or "127.0.0.1", where.port or 80, b'"update_customer"',
                hold=True) as cutter:
        policies(tmp_path, cutter.url)
        config = write_settings(tmp_path, store_url, executor_lease=1)
        gateway = Gateway(config)
        call = asyncio.create_task(call_tool(gateway.proxy, "update_customer",
                                             {"id": "cus_1", "plan": "enterprise"}))
        try:
            assert await asyncio.to_thread(cutter.cut.wait, 60), "the call never landed"
            gateway.kill()  # the server applied it; its answer never reached the gateway
        finally:
            gateway.stop()
        result = await call
        assert isinstance(result, Exception) or result.is_error, result
        restarted = Gateway(config)
        try:
            entry = poll(lambda: [e for e in restarted.journal() if e["state"] != "intent"],
                         "the tool call to be settled by recovery", 30)[0]
            assert (entry["path"], entry["state"]) == ("update_customer", "unknown"), entry
            assert entry["prior"]["plan"] == "pro", entry
            named = poll(lambda: [r for r in restarted.audit()
                                  if r["detail"].get("journal") == entry["id"]],
                         "an audit record naming the tool call", 30)
            assert [r["action"] for r in named] == ["call.allow"], named
            assert named[0]["detail"]["recovered"], named
            verified = restarted.api("GET", "/v1/audit/verify", "viewer").json()
            assert verified["ok"], verified
            assert [e["id"] for e in restarted.journal()] == [entry["id"]]
        finally:
            restarted.stop()
    # landed once, never sent again (neither by the killed process nor after the restart)
    assert httpx.get(f"{server}/customers/cus_1").json()["plan"] == "enterprise"
    assert requests_seen(server).count(("PATCH", "/customers/cus_1")) == 1
    assert cutter.passed == 1


@pytest.fixture
def two(tmp_path: Path, store_url: str, server: str) -> Iterator[list[Proc]]:
    policies(tmp_path, server)
    config = write_settings(tmp_path, store_url)
    first = start_gateway(config)
    try:
        second = start_gateway(config)
    except BaseException:
        first.stop()
        raise
    yield [first, second]
    second.stop()
    first.stop()


async def test_a_held_tool_call_approved_on_two_processes_at_once_runs_once(
        two: list[Proc], server: str) -> None:
    (proxy, first_admin), (_, second_admin) = two[0].urls, two[1].urls
    waiting = asyncio.create_task(call_tool(
        proxy, "create_deal", {"customer_id": "cus_1", "title": "Big", "amount": 50000}))
    pending: dict[str, Any] = await asyncio.to_thread(wait_for_pending, second_admin)
    assert (pending["method"], pending["path"]) == ("tools/call", "create_deal"), pending
    statuses = await asyncio.to_thread(approve_all, [first_admin, second_admin],
                                       pending["id"], 16)
    assert statuses.count(200) == 1 and set(statuses) == {200, 409}, statuses
    result = await asyncio.wait_for(waiting, 60)
    assert not isinstance(result, Exception) and not result.is_error, result
    assert result.structured_content["amount"] == 50000
    assert requests_seen(server).count(("POST", "/deals")) == 1


async def test_an_approved_tool_call_cut_off_once_it_ran_is_unknown_and_not_sent_again(
        tmp_path: Path, store_url: str, server: str) -> None:
    where = urlsplit(server)
    with Cutter(where.hostname or "127.0.0.1", where.port or 80, b'"create_deal"') as cutter:
        policies(tmp_path, cutter.url)
        gateway = Gateway(write_settings(tmp_path, store_url))
        try:
            waiting = asyncio.create_task(call_tool(
                gateway.proxy, "create_deal",
                {"customer_id": "cus_1", "title": "Big", "amount": 50000}))
            pending = await asyncio.to_thread(wait_for_pending, gateway.admin)
            approved = await asyncio.to_thread(
                gateway.api, "POST", f"/v1/approvals/{pending['id']}/approve", json={})
            assert cutter.cut.is_set(), approved.text  # the server ran it, its answer lost
            assert approved.status_code == 502, approved.text
            result = await asyncio.wait_for(waiting, 60)
            assert isinstance(result, Exception) or result.is_error, result  # not "done"
            status = gateway.api("GET", f"/v1/approvals/{pending['id']}", "viewer").json()
            assert status["status"] == "unknown", status
            [entry] = gateway.journal()
            assert (entry["path"], entry["state"]) == ("create_deal", "unknown"), entry
        finally:
            gateway.stop()
    assert requests_seen(server).count(("POST", "/deals")) == 1
    assert cutter.passed == 1


async def test_a_compensating_tool_call_cut_off_once_it_ran_is_unknown(
        tmp_path: Path, store_url: str, server: str) -> None:
    """The agent's update passes; the rollback's compensating update lands and its answer
    is lost. Before: the step failed with the SDK's "Connection closed" taken for the
    server's answer, and the compensation's journal entry said ``failed`` of a call that
    had landed."""
    where = urlsplit(server)
    with Cutter(where.hostname or "127.0.0.1", where.port or 80, b'"update_customer"',
                skip=1) as cutter:
        policies(tmp_path, cutter.url)
        gateway = Gateway(write_settings(tmp_path, store_url))
        try:
            result = await call_tool(gateway.proxy, "update_customer",
                                     {"id": "cus_1", "plan": "enterprise"})
            assert not isinstance(result, Exception) and not result.is_error, result
            [entry] = gateway.journal()
            assert entry["state"] == "completed", entry
            planned = gateway.api("POST", "/v1/rollback",
                                  json={"entries": [entry["id"]], "dry_run": False})
            assert cutter.cut.is_set(), planned.text  # the compensation ran, its answer lost
            assert planned.status_code == 200, planned.text
            [compensation] = gateway.journal(run=f"rollback:{planned.json()['plan']['id']}")
            assert compensation["state"] == "unknown", compensation
            [step] = planned.json()["plan"]["steps"]
            assert step["status"] == "failed" and "unknown" in step["detail"], step
        finally:
            gateway.stop()
    assert httpx.get(f"{server}/customers/cus_1").json()["plan"] == "pro"  # it landed
    assert requests_seen(server).count(("PATCH", "/customers/cus_1")) == 2
    assert cutter.passed == 2


async def test_an_approved_tool_call_out_when_the_gateway_was_killed_is_unknown_not_resent(
        tmp_path: Path, store_url: str, server: str) -> None:
    where = urlsplit(server)
    with Cutter(where.hostname or "127.0.0.1", where.port or 80, b'"create_deal"',
                hold=True) as cutter:
        policies(tmp_path, cutter.url)
        # the claim's lease: upstream_timeout + 2 * capture_timeout + 2 * executor_lease (9 s)
        config = write_settings(tmp_path, store_url, executor_lease=1, upstream_timeout=5,
                                capture_timeout=1)
        gateway = Gateway(config)
        waiting = asyncio.create_task(call_tool(
            gateway.proxy, "create_deal",
            {"customer_id": "cus_1", "title": "Big", "amount": 50000}))
        try:
            pending = await asyncio.to_thread(wait_for_pending, gateway.admin)
            in_thread(gateway.api, "POST", f"/v1/approvals/{pending['id']}/approve", json={})
            assert await asyncio.to_thread(cutter.cut.wait, 60), "the call never landed"
            gateway.kill()  # the server ran it; its answer never reached the gateway
        finally:
            gateway.stop()
        result = await waiting
        assert isinstance(result, Exception) or result.is_error, result
        restarted = Gateway(config)
        try:
            status = poll(lambda: (s := restarted.api(
                "GET", f"/v1/approvals/{pending['id']}", "viewer").json())["status"]
                != "approved" and s, "the dead process's claim to lapse", 120)
            assert status["status"] == "unknown", status
            [entry] = restarted.journal()
            assert (entry["path"], entry["state"]) == ("create_deal", "unknown"), entry
        finally:
            restarted.stop()
    assert requests_seen(server).count(("POST", "/deals")) == 1
    assert cutter.passed == 1
