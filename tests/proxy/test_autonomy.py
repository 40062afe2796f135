"""Modes and delays through the real listeners, against the demo CRM on a real socket.

The CRM records every request that reaches it (``CRM.log``): a shadowed write
must never appear there, an observed one always, a delayed one once, after its
delay, unless rejected or frozen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.crm import CRM
from tests.harness import Harness, policy_text, started_gateway, until

OBSERVE_RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: no-deletes
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: deny
  mode: observe
- id: big-deal
  match: {methods: [POST], path: "/deals", when: "request.body.amount > 10000"}
  action: hold
  mode: observe
- id: deals
  match: {methods: [POST], path: "/deals"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
"""

SHADOW_RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH, PUT], path: "/customers/{id}"}
  action: allow
- id: create-customer
  match: {methods: [POST], path: "/customers"}
  action: allow
- id: delete-customer
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: hold
- id: no-deal-deletes
  match: {methods: [DELETE], path: "/deals/{id}"}
  action: deny
"""

DELAY_RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: delete-later
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: delay
  delay: {seconds: 0.3}
- id: edit-customer
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
"""


def sent(crm: CRM, method: str | None = None) -> list[tuple[str, str]]:
    """What reached the CRM (the gateway's capture GETs included)."""
    return [(c["method"], c["path"]) for c in crm.log if method in (None, c["method"])]


@pytest.fixture
async def observing(tmp_path: Path, crm: tuple[CRM, str]) -> AsyncIterator[Harness]:
    text = policy_text(crm[1], OBSERVE_RULES, extra="credentials: {header: Authorization, "
                       'value: "Bearer upstream-secret"}\n')
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}) as harness:
        yield harness


@pytest.fixture
async def shadowing(tmp_path: Path, crm: tuple[CRM, str]) -> AsyncIterator[Harness]:
    text = policy_text(crm[1], SHADOW_RULES, extra="mode: shadow\ncredentials: "
                       '{header: Authorization, value: "Bearer upstream-secret"}\n')
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}) as harness:
        yield harness


@pytest.fixture
async def delaying(tmp_path: Path, crm: tuple[CRM, str]) -> AsyncIterator[Harness]:
    text = policy_text(crm[1], DELAY_RULES, extra="credentials: {header: Authorization, "
                       'value: "Bearer upstream-secret"}\n')
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}) as harness:
        yield harness


# -- observe ------------------------------------------------------------------

async def test_observe_forwards_a_call_the_rules_deny_and_records_would_decide(
        observing: Harness, crm: tuple[CRM, str]) -> None:
    gw, app = observing, crm[0]
    response = await gw.agent.delete("/crm/customers/cus_3", headers={"X-Agent-Run": "obs"})
    assert response.status_code == 204, response.text  # the CRM's own answer
    assert response.headers["x-gateway-decision"] == "allow"
    assert ("DELETE", "/customers/cus_3") in sent(app) and "cus_3" not in app.data["customers"]
    [entry] = await gw.journal(run="obs")
    assert (entry["decision"], entry["mode"], entry["would_decide"], entry["rule"]) == (
        "allow", "observe", "deny", "no-deletes")
    assert entry["prior"]["name"] == "Alan Turing" and entry["reversible"] is True
    assert [e["id"] for e in await gw.journal(would_decide="deny")] == [entry["id"]]
    await gw.gateway.audit.flush()
    audit = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()["items"]
    [record] = [a for a in audit if a["action"].startswith("call.")]
    assert record["action"] == "call.allow"
    assert {k: record["detail"][k] for k in ("upstream", "rule", "mode", "would_decide")} == {
        "upstream": "crm", "rule": "no-deletes", "mode": "observe", "would_decide": "deny"}
    metrics = (await gw.admin.get("/metrics")).text
    assert ('gateway_would_decide_total{mode="observe",upstream="crm",would_decide="deny"} 1.0'
            in metrics)


async def test_observe_forwards_a_call_a_hold_rule_would_hold(
        observing: Harness, crm: tuple[CRM, str]) -> None:
    gw, app = observing, crm[0]
    response = await gw.agent.post("/crm/deals", json={"title": "Big", "amount": 50000})
    assert response.status_code == 201 and response.headers["x-gateway-decision"] == "allow"
    assert ("POST", "/deals") in sent(app)
    assert (await gw.admin.get("/v1/approvals", headers=gw.as_role("viewer"))).json() == {
        "items": []}
    [entry] = await gw.journal()
    assert (entry["rule"], entry["would_decide"], entry["mode"]) == ("big-deal", "hold", "observe")
    small = await gw.agent.post("/crm/deals", json={"title": "Small", "amount": 5})
    assert small.status_code == 201  # an enforced rule: no trace of a mode
    newest = (await gw.journal())[0]
    assert (newest["rule"], newest["mode"], newest["would_decide"]) == ("deals", None, None)


async def test_observe_does_not_walk_around_the_kill_switch(
        observing: Harness, crm: tuple[CRM, str]) -> None:
    gw, app = observing, crm[0]
    assert (await gw.engage()).status_code == 200
    response = await gw.agent.delete("/crm/customers/cus_2")
    assert response.status_code == 423 and response.headers["x-gateway-decision"] == "frozen"
    assert sent(app, "DELETE") == [] and "cus_2" in app.data["customers"]


# -- shadow -------------------------------------------------------------------

async def test_shadow_never_reaches_the_upstream_and_projects_each_write(
        shadowing: Harness, crm: tuple[CRM, str]) -> None:
    gw, app = shadowing, crm[0]
    before = {k: dict(v) for k, v in app.data["customers"].items()}
    run = {"X-Agent-Run": "shadow-1"}

    patch = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free", "email": None},
                                 headers=run)
    assert patch.status_code == 200 and patch.headers["x-gateway-decision"] == "shadow"
    expected = {k: v for k, v in before["cus_1"].items() if k != "email"}
    assert patch.json() == {**expected, "plan": "free"}  # merge patch: null removes

    put = await gw.agent.put("/crm/customers/cus_2", json={"name": "G. Hopper", "plan": "pro"},
                             headers=run)
    assert put.status_code == 200 and put.json() == {"name": "G. Hopper", "plan": "pro"}
    created_put = await gw.agent.put("/crm/customers/cus_9", json={"name": "New"}, headers=run)
    assert created_put.status_code == 201 and created_put.json() == {"name": "New"}

    post = await gw.agent.post("/crm/customers", json={"name": "Shadow Co", "plan": "free"},
                               headers=run)
    assert post.status_code == 201 and post.headers["x-gateway-decision"] == "shadow"
    made = post.json()
    assert made["name"] == "Shadow Co" and made["id"].startswith("shadow-")
    assert post.headers["location"] == f"/crm/customers/{made['id']}"

    delete = await gw.agent.delete("/crm/customers/cus_3", headers=run)
    assert delete.status_code == 200 and delete.json() == before["cus_3"]  # the prior state
    gone = await gw.agent.delete("/crm/customers/cus_404", headers=run)
    assert gone.status_code == 204 and gone.content == b""

    form = await gw.agent.patch("/crm/customers/cus_2", content=b"plan=free&balance=5",
                                headers={**run, "content-type":
                                         "application/x-www-form-urlencoded"})
    assert form.status_code == 200 and form.json() == {**before["cus_2"], "plan": "free",
                                                       "balance": "5"}

    assert sent(app) == [(m, p) for m, p in sent(app) if m == "GET"]  # captures only
    assert app.data["customers"] == before
    entries = await gw.journal(run="shadow-1")
    assert len(entries) == 7
    assert {(e["state"], e["decision"], e["mode"]) for e in entries} == {
        ("shadow", "shadow", "shadow")}
    by_method = {(e["method"], e["path"]): e for e in entries}
    deleting = by_method[("DELETE", "/customers/cus_3")]
    assert deleting["would_decide"] == "hold" and deleting["prior"] == before["cus_3"]
    patching = by_method[("PATCH", "/customers/cus_1")]
    assert patching["would_decide"] == "allow"
    assert {c["field"]: (c["before"], c["after"]) for c in patching["changes"]} == {
        "email": ("ada@example.com", None), "plan": ("pro", "free")}


async def test_shadow_reads_pass_and_denials_stay_denials(
        shadowing: Harness, crm: tuple[CRM, str]) -> None:
    gw, app = shadowing, crm[0]
    read = await gw.agent.get("/crm/customers/cus_1")
    assert read.status_code == 200 and read.headers["x-gateway-decision"] == "allow"
    denied = await gw.agent.delete("/crm/deals/deal_1")
    assert denied.status_code == 403 and denied.json()["error"]["rule"] == "no-deal-deletes"
    assert "deal_1" in app.data["deals"] and await gw.journal() == []


async def test_a_shadow_run_rolls_back_to_nothing(shadowing: Harness,
                                                  crm: tuple[CRM, str]) -> None:
    gw, app = shadowing, crm[0]
    await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"},
                         headers={"X-Agent-Run": "s"})
    plan = (await gw.admin.post("/v1/rollback", json={"run": "s", "dry_run": False},
                                headers=gw.as_role("admin"))).json()["plan"]
    assert plan["steps"] == [] and plan["irreversible"] == []
    assert [s["reason"] for s in plan["skipped"]] == [
        "shadowed (mode: shadow): never sent, nothing to undo"]
    assert sent(app, "PUT") == [] and sent(app, "PATCH") == []


async def test_promoted_shadow_writes_become_held_calls_that_run_once_when_approved(
        shadowing: Harness, crm: tuple[CRM, str]) -> None:
    gw, app = shadowing, crm[0]
    run = {"X-Agent-Run": "s2"}
    await gw.agent.patch("/crm/customers/cus_1", json={"plan": "enterprise"}, headers=run)
    await gw.agent.patch("/crm/customers/cus_2", json={"plan": "free"}, headers=run)
    listed = (await gw.admin.get("/v1/shadow", params={"run": "s2"},
                                 headers=gw.as_role("viewer"))).json()["items"]
    assert [i["path"] for i in listed] == ["/customers/cus_2", "/customers/cus_1"]
    assert all(i["proposal"]["status"] == "shadow" and not i["proposal"]["promoted"]
               for i in listed)
    chosen = listed[1]
    assert [c["field"] for c in chosen["changes"]] == ["plan"]

    viewer = await gw.admin.post("/v1/shadow/promote", json={"entries": [chosen["id"]]},
                                 headers=gw.as_role("viewer"))
    assert viewer.status_code == 403
    promoted = await gw.admin.post("/v1/shadow/promote", json={"entries": [chosen["id"]]},
                                   headers=gw.as_role("approver"))
    assert promoted.status_code == 200, promoted.text
    [held] = promoted.json()["items"]
    assert (held["id"], held["status"], held["kind"], held["method"], held["path"]) == (
        chosen["id"], "pending", "shadow", "PATCH", "/customers/cus_1")
    again = await gw.admin.post("/v1/shadow/promote", json={"entries": [chosen["id"]]},
                                headers=gw.as_role("approver"))
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_promoted"
    unknown = await gw.admin.post("/v1/shadow/promote", json={"entries": ["nope"]},
                                  headers=gw.as_role("approver"))
    assert unknown.status_code == 404
    pending = (await gw.admin.get("/v1/approvals", params={"status": "pending"},
                                  headers=gw.as_role("viewer"))).json()["items"]
    assert [p["id"] for p in pending] == [held["id"]]  # the other stays a proposal only
    assert sent(app, "PATCH") == []

    wrong = await gw.admin.post(f"/v1/approvals/{held['id']}/approve",
                                json={"digest": "0" * 64}, headers=gw.as_role("approver"))
    assert wrong.status_code == 409 and sent(app, "PATCH") == []
    approved = await gw.admin.post(f"/v1/approvals/{held['id']}/approve",
                                   json={"digest": held["digest"]},
                                   headers=gw.as_role("approver"))
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    assert approved.json()["response"]["status"] == 200
    twice = await gw.admin.post(f"/v1/approvals/{held['id']}/approve", json={},
                                headers=gw.as_role("approver"))
    assert twice.status_code == 409
    assert sent(app, "PATCH") == [("PATCH", "/customers/cus_1")]
    assert app.data["customers"]["cus_1"]["plan"] == "enterprise"
    assert app.data["customers"]["cus_2"]["plan"] == "enterprise"  # not promoted: not sent
    executed = [e for e in await gw.journal(run="s2") if e["state"] == "completed"]
    assert [(e["path"], e["decision"], e["approval"]["id"]) for e in executed] == [
        ("/customers/cus_1", "hold", held["id"])]
    after = (await gw.admin.get("/v1/shadow", params={"run": "s2"},
                                headers=gw.as_role("viewer"))).json()["items"]
    assert {i["id"]: i["proposal"]["status"] for i in after} == {
        chosen["id"]: "executed", listed[0]["id"]: "shadow"}


# -- delay --------------------------------------------------------------------

async def delayed(gw: Harness, customer: str) -> dict[str, Any]:
    response = await gw.agent.delete(f"/crm/customers/{customer}")
    assert response.status_code == 202, response.text
    assert response.headers["x-gateway-decision"] == "hold"
    approval = response.json()["approval"]
    assert approval["status"] == "pending" and response.headers["location"] == \
        approval["status_url"]
    assert approval["due_at"]
    return approval


async def status(gw: Harness, approval: dict[str, Any]) -> dict[str, Any]:
    response = await gw.agent.get(approval["status_url"])
    assert response.status_code == 200
    return response.json()


async def test_a_delayed_call_runs_once_after_its_delay(delaying: Harness,
                                                        crm: tuple[CRM, str]) -> None:
    gw, app = delaying, crm[0]
    approval = await delayed(gw, "cus_3")
    assert sent(app, "DELETE") == []  # not at once
    done = await until(lambda: _executed(gw, approval), "the delayed call to run")
    assert done["response"]["status"] == 204
    assert sent(app, "DELETE") == [("DELETE", "/customers/cus_3")]
    await gw.gateway.approvals.run_due()  # a later sweep does not send it again
    assert sent(app, "DELETE") == [("DELETE", "/customers/cus_3")]
    [entry] = await gw.journal()
    assert (entry["decision"], entry["rule"], entry["approval"]["id"]) == (
        "delay", "delete-later", approval["id"])
    held = (await gw.admin.get(f"/v1/approvals/{approval['id']}",
                               headers=gw.as_role("viewer"))).json()
    assert (held["kind"], held["decided_by"], held["delay"]) == ("delay", "gateway", 0.3)


async def _executed(gw: Harness, approval: dict[str, Any]) -> dict[str, Any] | None:
    seen = await status(gw, approval)
    return seen if seen["status"] == "executed" else None


async def test_a_rejected_delayed_call_never_runs(delaying: Harness,
                                                  crm: tuple[CRM, str]) -> None:
    gw, app = delaying, crm[0]
    cancelled = await delayed(gw, "cus_3")
    rejected = await gw.admin.post(f"/v1/approvals/{cancelled['id']}/reject",
                                   json={"reason": "keep Alan"}, headers=gw.as_role("approver"))
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    later = await delayed(gw, "cus_2")  # due after the first: once it ran, the first was due
    await until(lambda: _executed(gw, later), "the second delayed call to run")
    assert sent(app, "DELETE") == [("DELETE", "/customers/cus_2")]
    assert (await status(gw, cancelled))["status"] == "rejected"
    assert "cus_3" in app.data["customers"]


async def test_a_delayed_call_due_while_frozen_is_not_run_and_waits_for_an_operator(
        delaying: Harness, crm: tuple[CRM, str]) -> None:
    gw, app = delaying, crm[0]
    frozen = await delayed(gw, "cus_3")
    assert (await gw.engage(upstream="crm")).status_code == 200
    held = await until(lambda: _suspended(gw, frozen), "the kill switch to cover the call")
    assert held["status"] == "pending" and held["due_at"] is None
    assert held["delay_frozen"]["freeze"]["scope"] == "upstream"
    assert sent(app, "DELETE") == []
    assert (await gw.release(upstream="crm")).status_code == 200
    later = await delayed(gw, "cus_2")  # the sweeper has run since the release
    await until(lambda: _executed(gw, later), "a delayed call after the release")
    assert sent(app, "DELETE") == [("DELETE", "/customers/cus_2")]  # not the frozen one
    assert (await status(gw, frozen))["status"] == "pending"
    approved = await gw.admin.post(f"/v1/approvals/{frozen['id']}/approve", json={},
                                   headers=gw.as_role("approver"))
    assert approved.status_code == 200 and approved.json()["status"] == "executed"
    assert sent(app, "DELETE").count(("DELETE", "/customers/cus_3")) == 1


async def _suspended(gw: Harness, approval: dict[str, Any]) -> dict[str, Any] | None:
    held = (await gw.admin.get(f"/v1/approvals/{approval['id']}",
                               headers=gw.as_role("viewer"))).json()
    return held if held.get("delay_frozen") else None


async def test_an_operator_may_run_a_delayed_call_early(delaying: Harness,
                                                        crm: tuple[CRM, str]) -> None:
    gw, app = delaying, crm[0]
    text = policy_text(crm[1], DELAY_RULES.replace("seconds: 0.3", "seconds: 3600"),
                       extra="credentials: {header: Authorization, "
                       'value: "Bearer upstream-secret"}\n')
    (gw.policies_dir / "crm.yaml").write_text(text)
    assert (await gw.admin.post("/v1/policies/reload", headers=gw.as_role("admin"))
            ).status_code == 200
    approval = await delayed(gw, "cus_1")
    approved = await gw.admin.post(f"/v1/approvals/{approval['id']}/approve", json={},
                                   headers=gw.as_role("approver"))
    assert approved.status_code == 200 and approved.json()["status"] == "executed"
    assert sent(app, "DELETE") == [("DELETE", "/customers/cus_1")]
