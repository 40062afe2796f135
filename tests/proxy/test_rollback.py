"""Rollback to a known good state, on a real upstream server."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.core.rollback import PlanStatus, StepStatus
from gateway.services.rollbacks import Selection
from gateway.upstreams.client import UpstreamClient
from tests.harness import CRM_RULES, Harness, policy_text, started_gateway

RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH, PUT], path: "/customers/{id}"}
  action: allow
- id: create
  match: {methods: [POST], path: "/customers"}
  action: allow
- id: delete-customer
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: allow
- id: deal-once
  match: {methods: [POST], path: "/deals"}
  action: allow
  undo: none
"""


def without_volatile(data: dict[str, Any]) -> dict[str, Any]:
    return {collection: {key: {k: v for k, v in item.items() if k != "updated_at"}
                         for key, item in items.items()}
            for collection, items in data.items()}


@pytest.fixture
async def gw(tmp_path: Path, crm):
    text = policy_text(crm[1], RULES, extra=VOLATILE + "credentials: {header: Authorization, "
                       'value: "Bearer upstream-secret"}\n')
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}) as harness:
        yield harness


VOLATILE = "volatile: [updated_at]\n"


async def agent_run(gw: Harness, run: str = "run-1") -> None:
    headers = {"X-Agent-Run": run}
    calls = [
        gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"}, headers=headers),
        gw.agent.put("/crm/customers/cus_2", json={"name": "Grace H.", "plan": "pro"},
                     headers=headers),
        gw.agent.post("/crm/customers", json={"name": "Mallory"}, headers=headers),
        gw.agent.delete("/crm/customers/cus_3", headers=headers),
        gw.agent.patch("/crm/customers/cus_1", json={"balance": 0}, headers=headers),
    ]
    for call in calls:  # in order: the rollback must undo them newest first
        response = await call
        assert response.status_code in (200, 201, 204), response.text


async def rollback(gw: Harness, **body: Any) -> dict[str, Any]:
    response = await gw.admin.post("/v1/rollback", json=body, headers=gw.as_role("admin"))
    assert response.status_code == 200, response.text
    return response.json()["plan"]


async def test_a_run_is_rolled_back_to_the_exact_initial_state(gw: Harness, crm) -> None:
    initial = copy.deepcopy(crm[0].data)
    await agent_run(gw)
    assert without_volatile(crm[0].data) != without_volatile(initial)
    dry = await rollback(gw, run="run-1")
    assert [s["status"] for s in dry["steps"]] == ["planned"] * 5
    assert [s["method"] for s in dry["steps"]] == ["PUT", "POST", "DELETE", "PUT", "PUT"]
    assert without_volatile(crm[0].data) != without_volatile(initial)  # dry run changed nothing
    plan = await rollback(gw, run="run-1", dry_run=False)
    assert [s["status"] for s in plan["steps"]] == ["applied"] * 5, plan
    assert plan["conflicts"] == [] and plan["irreversible"] == []
    assert without_volatile(crm[0].data) == without_volatile(initial)
    compensations = await gw.journal(run=f"rollback:{plan['id']}")
    assert len(compensations) == 5 and {c["decision"] for c in compensations} == {"rollback"}
    audit = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()["items"]
    assert [a["action"] for a in audit][-2:] == ["rollback.start", "rollback.finish"]
    shown = await gw.admin.get(f"/v1/rollback/{plan['id']}", headers=gw.as_role("viewer"))
    assert shown.json()["plan"]["status"] == "done"


async def test_a_resource_changed_since_is_a_conflict_unless_forced(gw: Harness, crm) -> None:
    await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"},
                         headers={"X-Agent-Run": "r"})
    async with httpx.AsyncClient(base_url=crm[1],
                                 headers={"Authorization": "Bearer upstream-secret"}) as human:
        assert (await human.patch("/customers/cus_1", json={"email": "new@x"})).status_code == 200
    dry = await rollback(gw, run="r")
    assert dry["steps"][0]["status"] == "conflict" and "email" in dry["steps"][0]["detail"]
    plan = await rollback(gw, run="r", dry_run=False)
    assert plan["steps"][0]["status"] == "conflict" and len(plan["conflicts"]) == 1
    assert crm[0].data["customers"]["cus_1"]["email"] == "new@x"  # left alone
    assert crm[0].data["customers"]["cus_1"]["plan"] == "free"
    forced = await rollback(gw, run="r", dry_run=False, force=True)
    assert forced["steps"][0]["status"] == "applied"
    assert crm[0].data["customers"]["cus_1"]["plan"] == "pro"


async def test_volatile_fields_are_not_a_conflict(gw: Harness, crm) -> None:
    await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"},
                         headers={"X-Agent-Run": "v"})
    crm[0].data["customers"]["cus_1"]["updated_at"] = "2099-01-01T00:00:00Z"
    plan = await rollback(gw, run="v", dry_run=False)
    assert plan["steps"][0]["status"] == "applied"


class RaceAfterRead:
    """The production client, except that someone edits the resource right after
    the rollback reads it (so the compensation's If-Match no longer holds)."""

    def __init__(self, client, crm) -> None:
        self._client, self._crm, self.armed = client, crm, False

    async def request(self, method, url, headers, body, **kwargs):
        response = await self._client.request(method, url, headers, body, **kwargs)
        if self.armed and method == "GET":
            self._crm.data["customers"]["cus_1"]["name"] = "Changed Meanwhile"
            self.armed = False
        return response

    async def close(self) -> None:
        await self._client.close()


async def test_an_etag_mismatch_is_a_conflict(tmp_path: Path, crm) -> None:
    racing = RaceAfterRead(UpstreamClient(), crm[0])
    text = policy_text(crm[1], CRM_RULES, extra="credentials: {header: Authorization, "
                       'value: "Bearer upstream-secret"}\n')
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}, client=racing) as gw:
        await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"},
                             headers={"X-Agent-Run": "e"})
        racing.armed = True
        plan = await rollback(gw, run="e", dry_run=False)
    assert plan["steps"][0]["status"] == "conflict" and "412" in plan["steps"][0]["detail"]
    assert crm[0].data["customers"]["cus_1"]["name"] == "Changed Meanwhile"


async def test_irreversible_calls_are_listed_for_manual_reconciliation(gw: Harness) -> None:
    created = await gw.agent.post("/crm/deals", json={"name": "D", "amount": 5},
                                  headers={"X-Agent-Run": "i"})
    assert created.status_code == 201
    plan = await rollback(gw, run="i")
    assert plan["steps"] == []
    [item] = plan["irreversible"]
    assert item["path"] == "/deals" and item["reason"] == "marked irreversible (undo: none)"
    assert item["response_body"] is not None


async def test_rollback_works_while_writes_are_frozen(gw: Harness, crm) -> None:
    initial = copy.deepcopy(crm[0].data)
    await agent_run(gw, "f")
    await gw.engage()
    plan = await rollback(gw, run="f", dry_run=False)
    assert {s["status"] for s in plan["steps"]} == {"applied"}
    assert without_volatile(crm[0].data) == without_volatile(initial)
    frozen = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "x"})
    assert frozen.status_code == 423


async def test_rollback_needs_admin_and_a_selection(gw: Harness) -> None:
    approver = await gw.admin.post("/v1/rollback", json={"run": "x"},
                                   headers=gw.as_role("approver"))
    assert approver.status_code == 403
    empty = await gw.admin.post("/v1/rollback", json={}, headers=gw.as_role("admin"))
    assert empty.status_code == 400
    unknown = await gw.admin.post("/v1/rollback", json={"entries": ["nope"]},
                                  headers=gw.as_role("admin"))
    assert unknown.status_code == 404


async def test_selection_by_entries_agent_and_window(gw: Harness, crm) -> None:
    await agent_run(gw, "w")
    entries = await gw.journal(run="w")
    newest = entries[0]
    plan = await rollback(gw, entries=[newest["id"]])
    assert [s["entry"] for s in plan["steps"]] == [newest["id"]]
    by_agent = await rollback(gw, agent="bot")
    assert len(by_agent["steps"]) == 5
    window = await rollback(gw, since=entries[1]["at"])
    assert {s["entry"] for s in window["steps"]} == {entries[0]["id"], entries[1]["id"]}


class CrashOnSecond:
    """Sends the second compensation, then 'dies' before recording it (once armed: the
    agent's own writes before the rollback go through)."""

    def __init__(self, client) -> None:
        self._client, self.sent, self.armed = client, 0, False

    async def request(self, method, url, headers, body, **kwargs):
        response = await self._client.request(method, url, headers, body, **kwargs)
        if self.armed and method != "GET":
            self.sent += 1
            if self.sent == 2:
                raise SystemExit("the process died")
        return response

    async def close(self) -> None:
        await self._client.close()


async def test_an_interrupted_rollback_resumes_without_repeating_a_step(tmp_path: Path,
                                                                       crm) -> None:
    initial = copy.deepcopy(crm[0].data)
    text = policy_text(crm[1], RULES, extra=VOLATILE + "credentials: {header: Authorization, "
                       'value: "Bearer upstream-secret"}\n')
    url = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    crashing = CrashOnSecond(UpstreamClient())
    async with started_gateway(tmp_path, url, {"crm.yaml": text}, client=crashing) as gw:
        await agent_run(gw, "c")
        crashing.armed = True
        with pytest.raises(SystemExit):
            await gw.gateway.rollbacks.start(Selection(run="c"), "admin", dry_run=False,
                                             force=False)
        [plan] = await gw.gateway.store.list_plans()
        assert plan.status is PlanStatus.RUNNING
        assert [s.status for s in plan.steps][:2] == [StepStatus.APPLIED, StepStatus.APPLYING]
    log_before = len(crm[0].log)
    async with started_gateway(tmp_path, url, {"crm.yaml": text}) as gw:
        await gw.gateway.resuming  # the gateway resumes unfinished plans at start
        plan = await gw.gateway.store.get_plan(plan.id)
        assert plan.status is PlanStatus.DONE, plan
        assert plan.steps[1].detail == "found applied when the plan resumed"
    resent = [c for c in crm[0].log[log_before:] if c["method"] != "GET"]
    assert len(resent) == 3  # steps 3-5 only: neither step 1 nor step 2 sent again
    assert without_volatile(crm[0].data) == without_volatile(initial)
