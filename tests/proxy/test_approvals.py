"""The approval queue through both listeners, in process, against a real upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from gateway.core.approvals import ApprovalStatus
from tests.harness import Harness, policy_text, started_gateway

HOLD_RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: big-deal
  match: {methods: [POST], path: "/deals", when: "request.body.amount > 10000"}
  action: hold
  approval: {wait: 0, expires: 3600}
- id: two-person
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: hold
  approval: {approvers: 2}
- id: admins-only
  match: {methods: [PUT], path: "/customers/{id}"}
  action: hold
  approval: {roles: [admin], wait: 5}
- id: deals
  match: {methods: [POST], path: "/deals"}
  action: allow
"""


@pytest.fixture
async def gw(tmp_path: Path, crm, monkeypatch: pytest.MonkeyPatch):
    text = policy_text(crm[1], HOLD_RULES, extra="credentials: {header: Authorization, "
                       'value: "Bearer upstream-secret"}\n')
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}) as harness:
        yield harness


async def hold_deal(gw: Harness, amount: int = 50000, **headers: str) -> str:
    response = await gw.agent.post("/crm/deals", json={"name": "Big", "amount": amount},
                                   headers=headers)
    assert response.status_code == 202, response.text
    assert response.headers["x-gateway-decision"] == "hold"
    approval = response.json()["approval"]
    assert approval["status"] == "pending"
    assert response.headers["location"] == approval["status_url"]
    assert approval["status_url"] == f"/_gateway/approvals/{approval['id']}"
    return approval["id"]


async def test_held_call_is_not_sent_until_approved_then_executes_once(gw: Harness, crm) -> None:
    deals_before = len(crm[0].data["deals"])
    call_id = await hold_deal(gw)
    assert len(crm[0].data["deals"]) == deals_before
    status = await gw.agent.get(f"/_gateway/approvals/{call_id}")
    assert status.json() == {"id": call_id, "status": "pending", "response": None}
    shown = await gw.admin.get(f"/v1/approvals/{call_id}", headers=gw.as_role("viewer"))
    assert shown.json()["rule"] == "big-deal" and shown.json()["agent"] == "bot"
    assert {"field": "amount", "before": None, "after": 50000} in shown.json()["changes"]
    approved = await gw.admin.post(f"/v1/approvals/{call_id}/approve",
                                   json={"comment": "ok by me"}, headers=gw.as_role("approver"))
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    assert approved.json()["response"]["status"] == 201
    assert len(crm[0].data["deals"]) == deals_before + 1
    again = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                headers=gw.as_role("admin"))
    assert again.status_code == 409
    status = (await gw.agent.get(f"/_gateway/approvals/{call_id}")).json()
    assert status["status"] == "executed" and status["response"]["status"] == 201
    [entry] = await gw.journal()
    assert entry["decision"] == "hold" and entry["rule"] == "big-deal"
    await gw.gateway.audit.flush()
    audit = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()["items"]
    decisions = [a for a in audit if a["action"].startswith("approval.")]
    assert [a["action"] for a in decisions] == ["approval.held", "approval.approve",
                                                "approval.executed"]
    assert decisions[1]["actor"] == "approver"
    assert decisions[1]["detail"]["comment"] == "ok by me"
    [held] = [a for a in audit if a["action"] == "call.hold"]
    assert held["actor"] == "bot" and held["detail"]["status"] == 202


async def test_other_agents_cannot_see_a_held_call(gw: Harness) -> None:
    call_id = await hold_deal(gw)
    other = await gw.agent.get(f"/_gateway/approvals/{call_id}",
                               headers={"X-Gateway-Key": "agent-key-2"})
    assert other.status_code == 404
    assert (await gw.agent.get("/_gateway/approvals/nope")).status_code == 404


async def test_rejected_call_is_never_forwarded(gw: Harness, crm) -> None:
    before = len(crm[0].data["deals"])
    call_id = await hold_deal(gw)
    rejected = await gw.admin.post(f"/v1/approvals/{call_id}/reject", json={"reason": "no"},
                                   headers=gw.as_role("approver"))
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    late = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                               headers=gw.as_role("approver"))
    assert late.status_code == 409
    assert len(crm[0].data["deals"]) == before
    assert (await gw.agent.get(f"/_gateway/approvals/{call_id}")).json()["status"] == "rejected"


async def test_a_waiting_agent_gets_the_upstream_response(gw: Harness, crm) -> None:
    task = asyncio.create_task(gw.agent.post(
        "/crm/deals", json={"name": "Waits", "amount": 99999}, headers={"Prefer": "wait=20"}))
    pending = await _first_pending(gw)
    approved = await gw.admin.post(f"/v1/approvals/{pending}/approve", json={},
                                   headers=gw.as_role("approver"))
    assert approved.status_code == 200
    response = await task
    assert response.status_code == 201
    assert response.json()["name"] == "Waits"
    assert response.json()["id"] in crm[0].data["deals"]


async def test_a_waiting_agent_learns_of_a_rejection(gw: Harness) -> None:
    task = asyncio.create_task(gw.agent.post(
        "/crm/deals", json={"name": "W", "amount": 99999}, headers={"Prefer": "wait=20"}))
    pending = await _first_pending(gw)
    await gw.admin.post(f"/v1/approvals/{pending}/reject", json={}, headers=gw.as_role("admin"))
    response = await task
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "approval_rejected"


async def _first_pending(gw: Harness) -> str:
    for _ in range(2000):  # bounded: until the held call is committed
        items = (await gw.admin.get("/v1/approvals", params={"status": "pending"},
                                    headers=gw.as_role("viewer"))).json()["items"]
        if items:
            return items[0]["id"]
        await asyncio.sleep(0)
    raise AssertionError("no pending approval appeared")


async def test_two_person_rule(gw: Harness, crm) -> None:
    response = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "free"})
    assert response.status_code == 202
    call_id = response.json()["approval"]["id"]
    first = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                headers=gw.as_role("approver"))
    assert first.status_code == 200 and first.json()["status"] == "pending"
    assert crm[0].data["customers"]["cus_1"]["plan"] == "pro"
    same = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                               headers=gw.as_role("approver"))
    assert same.status_code == 409 and same.json()["error"]["code"] == "already_voted"
    second = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                 headers=gw.as_role("admin"))
    assert second.json()["status"] == "executed"
    assert crm[0].data["customers"]["cus_1"]["plan"] == "free"
    [entry] = await gw.journal()
    assert entry["prior"]["plan"] == "pro"  # captured at execution, like a live call


async def test_rule_roles_and_viewer_cannot_approve(gw: Harness) -> None:
    response = await gw.agent.put("/crm/customers/cus_2", json={"name": "G"},
                                  headers={"Prefer": "wait=0"})
    call_id = response.json()["approval"]["id"]
    viewer = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                 headers=gw.as_role("viewer"))
    assert viewer.status_code == 403
    approver = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                   headers=gw.as_role("approver"))
    assert approver.status_code == 403
    admin = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                headers=gw.as_role("admin"))
    assert admin.json()["status"] == "executed"


async def test_approve_while_frozen_is_423_and_stays_pending(gw: Harness, crm) -> None:
    before = len(crm[0].data["deals"])
    call_id = await hold_deal(gw)
    await gw.engage(upstream="crm")
    frozen = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                 headers=gw.as_role("approver"))
    assert frozen.status_code == 423
    shown = await gw.admin.get(f"/v1/approvals/{call_id}", headers=gw.as_role("viewer"))
    assert shown.json()["status"] == "pending" and shown.json()["approvals"] == []
    await gw.release(upstream="crm")
    approved = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                   headers=gw.as_role("approver"))
    assert approved.json()["status"] == "executed"
    assert len(crm[0].data["deals"]) == before + 1


async def test_digest_binding(gw: Harness, crm) -> None:
    call_id = await hold_deal(gw)
    shown = (await gw.admin.get(f"/v1/approvals/{call_id}", headers=gw.as_role("viewer"))).json()
    wrong = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={"digest": "0" * 64},
                                headers=gw.as_role("approver"))
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "digest_mismatch"
    # the stored call altered behind the gateway's back: refused, never sent
    store = gw.gateway.store
    held = await store.get_held(call_id)
    import dataclasses
    tampered = dataclasses.replace(held, id="tampered", body=held.body.replace(b"Big", b"Bog"))
    await store.create_held(tampered)
    before = len(crm[0].data["deals"])
    refused = await gw.admin.post("/v1/approvals/tampered/approve", json={},
                                  headers=gw.as_role("approver"))
    assert refused.status_code == 409
    assert (await store.get_held("tampered")).status is ApprovalStatus.FAILED
    assert len(crm[0].data["deals"]) == before
    ok = await gw.admin.post(f"/v1/approvals/{call_id}/approve",
                             json={"digest": shown["digest"]}, headers=gw.as_role("approver"))
    assert ok.json()["status"] == "executed"


async def test_concurrent_approvals_execute_once(gw: Harness, crm) -> None:
    before = len(crm[0].data["deals"])
    call_id = await hold_deal(gw)
    results = await asyncio.gather(*(
        gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                      headers=gw.as_role(role)) for role in ["approver", "admin"] * 10))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 1 and set(statuses) == {200, 409}
    assert len(crm[0].data["deals"]) == before + 1
    assert sum(1 for c in crm[0].log if c["method"] == "POST") == 1


async def test_expired_calls_are_never_executed(tmp_path: Path, crm) -> None:
    rules = HOLD_RULES.replace("approval: {wait: 0, expires: 3600}",
                               "approval: {wait: 0, expires: 0.001}")
    text = policy_text(crm[1], rules)
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}) as gw:
        call_id = await hold_deal(gw)
        held = await gw.gateway.store.get_held(call_id)
        assert held.expires_at is not None
        late = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                   headers=gw.as_role("approver"))
        assert late.status_code == 409
        status = (await gw.agent.get(f"/_gateway/approvals/{call_id}")).json()
        assert status["status"] == "expired"
        assert not any(c["method"] == "POST" for c in crm[0].log)


async def test_approvals_list_filters(gw: Harness) -> None:
    first = await hold_deal(gw)
    await hold_deal(gw, amount=70000, **{"X-Gateway-Key": "agent-key-2"})
    listed = await gw.admin.get("/v1/approvals", params={"agent": "bot"},
                                headers=gw.as_role("viewer"))
    assert [c["id"] for c in listed.json()["items"]] == [first]
    everything = await gw.admin.get("/v1/approvals", params={"status": "pending"},
                                    headers=gw.as_role("viewer"))
    assert len(everything.json()["items"]) == 2
    assert (await gw.admin.get("/v1/approvals")).status_code == 401


async def test_held_secret_headers_are_sealed_never_shown_and_sent_on_approval(
        gw: Harness, crm, tmp_path: Path) -> None:
    # (X-Api-Key is an identity header now: a second key there would be a 400)
    call_id = await hold_deal(gw, **{"X-Upstream-Token": "sk_live_secret", "X-Custom": "kept"})
    held = await gw.gateway.store.get_held(call_id)
    names = dict(held.headers)
    assert names["x-upstream-token"] == "sk_live_secret"  # opened from its sealed copy
    assert "x-gateway-key" not in names and names["x-custom"] == "kept"
    shown = await gw.admin.get(f"/v1/approvals/{call_id}", headers=gw.as_role("viewer"))
    assert "sk_live_secret" not in shown.text
    listed = await gw.admin.get("/v1/approvals", headers=gw.as_role("viewer"))
    assert "sk_live_secret" not in listed.text
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("gw.db*") if p.suffix != ".key")
    assert b"sk_live_secret" not in on_disk
    approved = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                   headers=gw.as_role("approver"))
    assert approved.status_code == 200 and "sk_live_secret" not in approved.text
    [sent] = [c for c in crm[0].log if c["method"] == "POST"]
    assert sent["headers"]["x-upstream-token"] == "sk_live_secret"  # what the agent sent
    journal = await gw.admin.get("/v1/journal", headers=gw.as_role("viewer"))
    assert journal.status_code == 200 and "sk_live_secret" not in journal.text
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("gw.db*") if p.suffix != ".key")
    assert b"sk_live_secret" not in on_disk


async def test_held_calls_survive_a_restart(tmp_path: Path, crm) -> None:
    text = policy_text(crm[1], HOLD_RULES)
    url = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    async with started_gateway(tmp_path, url, {"crm.yaml": text}) as gw:
        call_id = await hold_deal(gw)
    async with started_gateway(tmp_path, url, {"crm.yaml": text}) as gw:
        approved = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                       headers=gw.as_role("approver"))
        assert approved.json()["status"] == "executed"


async def test_a_claim_left_by_a_dead_process_becomes_unknown(tmp_path: Path, crm) -> None:
    """A crash between approval and forwarding: never silently re-sent."""
    from datetime import timedelta

    from gateway.core.model import utcnow
    text = policy_text(crm[1], HOLD_RULES)
    url = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    async with started_gateway(tmp_path, url, {"crm.yaml": text}) as gw:
        call_id = await hold_deal(gw)
        held = await gw.gateway.store.get_held(call_id)
        past = utcnow() - timedelta(hours=1)
        assert await gw.gateway.store.claim_held(call_id, held.votes, held.votes, "approver",
                                                 past, past)  # claimed, then the process died
    async with started_gateway(tmp_path, url, {"crm.yaml": text}) as gw:
        shown = await gw.admin.get(f"/v1/approvals/{call_id}", headers=gw.as_role("viewer"))
        assert shown.json()["status"] == "unknown"
        again = await gw.admin.post(f"/v1/approvals/{call_id}/approve", json={},
                                    headers=gw.as_role("admin"))
        assert again.status_code == 409
        assert not any(c["method"] == "POST" for c in crm[0].log)
        status = (await gw.agent.get(f"/_gateway/approvals/{call_id}")).json()["status"]
        assert status == "unknown"  # never "failed": it may have landed


async def test_webhook_is_signed_and_never_blocks(tmp_path: Path, crm) -> None:
    import hashlib
    import hmac
    received: list[tuple[dict, bytes]] = []
    arrived = asyncio.Event()

    async def receiver(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        arrived.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    from tests.harness import serve_app
    async with serve_app(receiver) as hook_url:
        text = policy_text(crm[1], HOLD_RULES)
        async with started_gateway(
                tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db", {"crm.yaml": text},
                approval_webhook={"url": hook_url, "secret": "shh"}) as gw:
            call_id = await hold_deal(gw)
            await arrived.wait()
    headers, body = received[0]
    expected = hmac.new(b"shh", headers["x-gateway-timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["x-gateway-signature"] == f"sha256={expected}"
    assert httpx.Response(200, content=body).json()["approval"]["id"] == call_id


async def test_a_held_calls_secret_field_is_listed_redacted(gw: Harness, crm) -> None:
    """Operators see that a held call sets a secret-named field, never its value."""
    response = await gw.agent.patch("/crm/customers/cus_1",
                                    json={"plan": "free", "api_token": "tok-agent-set"})
    assert response.status_code == 202, response.text
    call_id = response.json()["approval"]["id"]
    shown = await gw.admin.get(f"/v1/approvals/{call_id}", headers=gw.as_role("viewer"))
    changes = {c["field"]: (c["before"], c["after"]) for c in shown.json()["changes"]}
    assert changes["api_token"][1] == "[REDACTED]" and changes["plan"][1] == "free"
    assert "tok-agent-set" not in shown.text
