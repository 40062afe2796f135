"""An agent whose own timeout is shorter than the hold's ``wait`` closes its connection
and resends the call, as SDKs do. Before, each resend queued a second held call, and an
operator who approved both sent the write twice. The resend now rejoins the call its
agent left, even sent the moment the agent's connection closed: one call in the queue,
one write upstream, and the resend gets its answer.
A real uvicorn on port 0 (the connection's close is what is seen) and a real upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.server import server_for
from tests.faults.procs_support import RULES
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import AGENT_KEY, Harness, policy_text, served, started_gateway, until

WAITS = {"Prefer": "wait=20"}  # longer than the agent's patience
ASKED = RULES + """
- id: asked
  match: {methods: [PATCH], path: "/asked/{id}"}
  action: hold
  approval: {answer: error}
"""


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream({"/held/x": {"name": "x", "v": 1},
                        "/asked/x": {"name": "x", "v": 1}}) as up:
        yield up


@asynccontextmanager
async def gateway_and_agent(tmp_path: Path, store_url: str, upstream: FaultUpstream
                            ) -> AsyncIterator[tuple[Harness, httpx.AsyncClient, Any]]:
    policies = {"up.yaml": policy_text(upstream.url, ASKED, upstream="up")}
    async with started_gateway(tmp_path, store_url, policies) as gw:
        server = server_for(gw.gateway.proxy_app(), gw.gateway.settings)
        async with served(server) as port, httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}/up", timeout=30,
                headers={"X-Gateway-Key": AGENT_KEY}) as agent:
            yield gw, agent, server


async def leave_unanswered(gw: Harness, agent: httpx.AsyncClient, server: Any) -> str:
    """The agent sends the held call, gives up while it waits, and is gone (its
    connection's close seen by the gateway; the mark may still be on its way)."""
    first = asyncio.create_task(agent.patch("/held/x", json={"v": 2}, headers=WAITS))
    (pending,) = await until(lambda: listed(gw, "pending"), "the call held")
    first.cancel()  # the agent's timeout: its connection is closed
    await asyncio.gather(first, return_exceptions=True)
    await until(lambda: not server.server_state.connections, "the agent gone")
    return str(pending["id"])


async def test_the_resend_of_a_call_left_waiting_rejoins_it(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    async with gateway_and_agent(tmp_path, store_url, upstream) as (gw, agent, server):
        call_id = await leave_unanswered(gw, agent, server)
        resend = asyncio.create_task(agent.patch("/held/x", json={"v": 2}, headers=WAITS))
        await until(lambda: actions(gw, "approval.rejoined"), "the resend rejoined the call")
        other = await agent.patch("/held/x", json={"v": 2},  # meant as a call of its own
                                  headers={"Idempotency-Key": "k-2", "Prefer": "wait=0"})
        assert other.status_code == 202 and other.json()["approval"]["id"] != call_id
        assert {c["id"] for c in await listed(gw, "pending")} == {
            call_id, other.json()["approval"]["id"]}  # no third call
        approved = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.status_code == 200, approved.text
        answered = await resend
        assert answered.status_code == 200, answered.text
        assert answered.json()["v"] == 2
        (rejoined,) = await actions(gw, "approval.rejoined")
        assert rejoined["detail"]["approval"] == call_id
        verified = (await gw.admin.get("/v1/audit/verify", headers=gw.as_role("viewer"))).json()
    assert upstream.received("PATCH", "/held/x") == [{"v": 2}]  # once
    assert verified["ok"] is True


async def test_a_resend_after_the_call_ran_gets_its_answer_and_sends_nothing(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    async with gateway_and_agent(tmp_path, store_url, upstream) as (gw, agent, server):
        call_id = await leave_unanswered(gw, agent, server)
        await until(lambda: actions(gw, "approval.agent_left"), "the call marked as left")
        approved = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.status_code == 200, approved.text
        resend = await agent.patch("/held/x", json={"v": 2}, headers=WAITS)
        assert resend.status_code == 200 and resend.json()["v"] == 2, resend.text
        assert [c["id"] for c in await listed(gw, None)] == [call_id]
        again = await agent.patch("/held/x", json={"v": 2}, headers={"Prefer": "wait=0"})
        assert again.status_code == 202  # answered once: the next is a call of its own
    assert upstream.received("PATCH", "/held/x") == [{"v": 2}]


async def test_an_sdk_retrying_approval_pending_rejoins_the_call(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    """``answer: error`` answers 409, which SDKs retry (Stripe's; Stainless-made ones as a
    lock timeout): each retry was another held call. Now each is told of the same one,
    and once it ran, the next retry gets its answer."""
    async with gateway_and_agent(tmp_path, store_url, upstream) as (gw, agent, _):
        tries = [await agent.patch("/asked/x", json={"v": 3}) for _ in range(3)]
        assert [t.status_code for t in tries] == [409, 409, 409]
        ids = {t.json()["error"]["approval"] for t in tries}
        assert len(ids) == 1 and [c["id"] for c in await listed(gw, None)] == list(ids)
        approved = await gw.admin.post(f"/v1/approvals/{ids.pop()}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.status_code == 200, approved.text
        retried = await agent.patch("/asked/x", json={"v": 3})
        assert retried.status_code == 200 and retried.json()["v"] == 3, retried.text
        anew = await agent.patch("/asked/x", json={"v": 3})  # answered: a call of its own
        assert anew.status_code == 409 and len(await listed(gw, None)) == 2
    assert upstream.received("PATCH", "/asked/x") == [{"v": 3}]


async def listed(gw: Harness, status: str | None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    response = await gw.admin.get("/v1/approvals", params=params, headers=gw.as_role("viewer"))
    return list(response.json()["items"])


async def actions(gw: Harness, action: str) -> list[dict[str, Any]]:
    audit = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()["items"]
    return [r for r in audit if r["action"] == action]
