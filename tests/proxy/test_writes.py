"""Mutating calls: capture before write, the journal, and what stops a write."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.store.sql import open_store
from tests.harness import CRM_RULES, Harness, policy_text, started_gateway


async def test_patch_is_captured_then_journaled_with_checkpoint(gw: Harness, crm) -> None:
    response = await gw.agent.patch(
        "/crm/customers/cus_1", json={"plan": "enterprise", "password": "hunter2"},
        headers={"X-Agent-Run": "run-7", "X-Agent-Model": "m-1",
                 "X-Agent-Prompt-Version": "p3", "X-Agent-Tool-Version": "t9"})
    assert response.status_code == 200
    calls = [(c["method"], c["path"]) for c in crm[0].log]
    assert calls[-2:] == [("GET", "/customers/cus_1"), ("PATCH", "/customers/cus_1")]
    [entry] = await gw.journal(run="run-7")
    assert entry["method"] == "PATCH" and entry["path"] == "/customers/cus_1"
    assert entry["agent"] == "bot" and entry["rule"] == "edit-customer"
    assert entry["decision"] == "allow" and entry["status"] == 200
    assert entry["prior"]["plan"] == "pro"
    assert entry["undo"]["method"] == "PUT" and entry["undo"]["body"]["plan"] == "pro"
    assert entry["reversible"] is True
    assert (entry["model"], entry["prompt_version"], entry["tool_version"]) == ("m-1", "p3", "t9")
    assert entry["policy_revision"] == gw.gateway.policies.revision
    assert "hunter2" not in json.dumps(entry)
    assert "x-gateway-key" not in entry["request"]["headers"]  # the key is gone before the journal
    assert json.loads(entry["response"]["body"])["plan"] == "enterprise"


async def test_post_records_the_created_resource_and_reads_are_not_journaled(gw: Harness) -> None:
    await gw.agent.get("/crm/customers")
    created = await gw.agent.post("/crm/customers", json={"name": "Grace"})
    assert created.status_code == 201
    [entry] = await gw.journal()
    assert entry["prior"] is None and entry["status"] == 201
    assert entry["undo"] == {"method": "DELETE", "path": f"/customers/{created.json()['id']}",
                             "body": None, "content_type": "application/json"}


async def test_failed_capture_sends_nothing(gw: Harness, crm) -> None:
    before = len(crm[0].log)
    response = await gw.agent.patch("/crm/customers/nope/extra", json={})
    assert response.status_code == 403  # no rule: default deny, nothing sent
    crm[0].token = "rotated"  # the capture GET now gets 401 from the upstream
    response = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "x"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "capture_failed"
    assert [c["method"] for c in crm[0].log[before:]] == ["GET"]
    assert await gw.journal() == []


class BrokenJournal:
    """The real store, except that journal writes fail."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def journal_intent(self, entry) -> None:
        raise ConnectionError("database went away")


async def test_unavailable_journal_sends_nothing(tmp_path: Path, crm) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    store = BrokenJournal(open_store(url))
    text = policy_text(crm[1], CRM_RULES, extra="credentials: {header: Authorization, "
                       "value: \"Bearer upstream-secret\"}\n")
    async with started_gateway(tmp_path, url, {"crm.yaml": text}, store=store) as gw:
        before = len(crm[0].log)
        response = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "x"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "journal_unavailable"
        assert [c["method"] for c in crm[0].log[before:]] == ["GET"]  # capture only
        assert crm[0].data["customers"]["cus_1"]["plan"] == "pro"


async def test_kill_switch_scopes(gw: Harness, crm) -> None:
    engaged = await gw.engage(upstream="crm")
    assert engaged.status_code == 200 and engaged.json()["engaged"] is True
    before = len(crm[0].log)
    frozen = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "x"})
    assert frozen.status_code == 423
    assert frozen.headers["x-gateway-decision"] == "frozen"
    assert frozen.json()["error"]["code"] == "writes_frozen"
    assert len(crm[0].log) == before  # not even the capture GET
    assert (await gw.agent.get("/crm/customers/cus_1")).status_code == 200  # reads go on
    assert (await gw.release(upstream="crm")).json()["engaged"] is False
    assert (await gw.agent.patch("/crm/customers/cus_1", json={"plan": "x"})).status_code == 200

    await gw.engage(agent="other")
    assert (await gw.agent.patch("/crm/customers/cus_1", json={"plan": "y"})).status_code == 200
    other = await gw.agent.patch("/crm/customers/cus_1", json={"plan": "z"},
                                 headers={"X-Gateway-Key": "agent-key-2"})
    assert other.status_code == 423
    await gw.engage()
    assert (await gw.agent.patch("/crm/customers/cus_1", json={"plan": "z"})).status_code == 423
    state = (await gw.admin.get("/v1/killswitch", headers=gw.as_role("viewer"))).json()
    assert {(f["scope"], f["target"]) for f in state["freezes"]} == {("agent", "other"),
                                                                    ("global", None)}
    assert all(f["by"] == "approver" and f["reason"] == "test" for f in state["freezes"])


async def test_engage_waits_for_writes_already_on_their_way(gw: Harness, crm) -> None:
    """Writes racing an engage: once engage returns, no write reaches the upstream."""
    marker = {"method": "MARK", "path": "engage returned"}

    async def engage_then_mark() -> None:
        await gw.engage()
        crm[0].log.append(marker)

    writes = [gw.agent.patch(f"/crm/customers/cus_{1 + i % 3}", json={"plan": f"p{i}"})
              for i in range(40)]
    results = await asyncio.gather(*writes[:20], engage_then_mark(), *writes[20:])
    statuses = {r.status_code for r in results if r is not None}
    assert statuses <= {200, 423} and 423 in statuses
    after = crm[0].log[crm[0].log.index(marker) + 1:]
    assert after == []
    sent = sum(1 for c in crm[0].log if c["method"] == "PATCH")
    assert sent == sum(1 for r in results if r is not None and r.status_code == 200)


class HeldWrites:
    """The production client, except that writes wait for ``go`` (a slow network)."""

    def __init__(self) -> None:
        from gateway.upstreams.client import UpstreamClient
        self._client = UpstreamClient()
        self.arrived = asyncio.Event()
        self.go = asyncio.Event()

    async def request(self, method, url, headers, body, **kwargs):
        if method != "GET":
            self.arrived.set()
            await self.go.wait()
        return await self._client.request(method, url, headers, body, **kwargs)

    async def close(self) -> None:
        await self._client.close()


async def test_engage_does_not_return_while_a_write_is_on_its_way(tmp_path: Path, crm) -> None:
    client = HeldWrites()
    text = policy_text(crm[1], CRM_RULES, extra="credentials: {header: Authorization, "
                       "value: \"Bearer upstream-secret\"}\n")
    async with started_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db",
                               {"crm.yaml": text}, client=client) as gw:
        write = asyncio.create_task(gw.agent.patch("/crm/customers/cus_1", json={"plan": "a"}))
        await client.arrived.wait()  # past every freeze check, not yet sent
        engage = asyncio.create_task(gw.engage())
        done, _ = await asyncio.wait({engage, write}, timeout=0.5)
        assert done == set()  # engage waits for the write it would otherwise race
        client.go.set()
        assert (await write).status_code == 200
        assert (await engage).status_code == 200
        assert (await gw.agent.patch("/crm/customers/cus_1", json={"plan": "b"})
                ).status_code == 423
        assert crm[0].data["customers"]["cus_1"]["plan"] == "a"
    await client.close()


async def test_admin_roles(gw: Harness) -> None:
    assert (await gw.admin.get("/v1/killswitch")).status_code == 401
    agent_key = {"Authorization": "Bearer agent-key-1"}
    assert (await gw.admin.get("/v1/killswitch", headers=agent_key)).status_code == 401
    viewer_engage = await gw.admin.post("/v1/killswitch/engage", json={"reason": "x"},
                                        headers=gw.as_role("viewer"))
    assert viewer_engage.status_code == 403
    assert viewer_engage.json()["error"]["code"] == "forbidden"
    assert (await gw.engage()).status_code == 200
    approver_release = await gw.admin.post("/v1/killswitch/release", json={"reason": "x"},
                                           headers=gw.as_role("approver"))
    assert approver_release.status_code == 403
    assert (await gw.release()).status_code == 200
    both = await gw.engage(upstream="crm", agent="bot")
    assert both.status_code == 400
    no_reason = await gw.admin.post("/v1/killswitch/engage", json={},
                                    headers=gw.as_role("approver"))
    assert no_reason.status_code == 400


async def test_freeze_changes_are_audited(gw: Harness) -> None:
    await gw.engage(upstream="crm")
    await gw.release(upstream="crm")
    audit = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()["items"]
    assert [(a["action"], a["actor"]) for a in audit] == [("killswitch.engage", "approver"),
                                                          ("killswitch.release", "admin")]
    verified = (await gw.admin.get("/v1/audit/verify", headers=gw.as_role("viewer"))).json()
    assert verified == {"ok": True, "count": 2, "head": audit[-1]["hash"],
                        "first_bad_seq": None}


async def test_journal_filters(gw: Harness) -> None:
    for i, run in enumerate(["a", "a", "b"]):
        response = await gw.agent.patch(f"/crm/customers/cus_{i + 1}", json={"plan": run},
                                        headers={"X-Agent-Run": run})
        assert response.status_code == 200
    assert len(await gw.journal(run="a")) == 2
    assert len(await gw.journal(upstream="crm", limit=1)) == 1
    assert await gw.journal(agent="other") == []
    everything = await gw.journal()
    assert [e["path"] for e in everything] == ["/customers/cus_3", "/customers/cus_2",
                                               "/customers/cus_1"]  # newest first
    since = await gw.journal(since=everything[1]["at"])
    assert {e["id"] for e in since} == {everything[0]["id"], everything[1]["id"]}
    bad = await gw.admin.get("/v1/journal", params={"since": "yesterday"},
                             headers=gw.as_role("viewer"))
    assert bad.status_code == 400


async def test_policy_reload_keeps_the_last_good_set(gw: Harness, crm) -> None:
    before = gw.gateway.policies.revision
    (gw.policies_dir / "broken.yaml").write_text("upstream: x\nbase_url: nope\nrules: []\n")
    response = await gw.admin.post("/v1/policies/reload", headers=gw.as_role("admin"))
    assert response.status_code == 422
    assert any("broken.yaml:2:" in p for p in response.json()["error"]["problems"])
    assert gw.gateway.policies.revision == before
    (gw.policies_dir / "broken.yaml").unlink()
    text = policy_text(crm[1], "- id: ro\n  match: {methods: [GET]}\n  action: allow\n")
    (gw.policies_dir / "crm.yaml").write_text(text)
    response = await gw.admin.post("/v1/policies/reload", headers=gw.as_role("admin"))
    assert response.status_code == 200 and response.json()["revision"] != before
    assert (await gw.agent.patch("/crm/customers/cus_1", json={})).status_code == 403
    approver = await gw.admin.post("/v1/policies/reload", headers=gw.as_role("approver"))
    assert approver.status_code == 403


async def test_tampering_with_the_audit_log_is_detected(gw: Harness, tmp_path: Path) -> None:
    import sqlite3

    def edit(statement: str) -> None:  # someone edits the database directly
        with sqlite3.connect(tmp_path / "gw.db") as db:
            db.execute(statement)

    await gw.engage(upstream="crm")
    await gw.release(upstream="crm")
    await gw.engage(agent="other")
    # on a thread: the gateway's loop may be in the middle of a write transaction, which it
    # must be free to finish (on the loop's thread, this waited for it and was locked out)
    await asyncio.to_thread(
        edit, "UPDATE audit SET detail = '{\"reason\": \"nothing happened\"}' WHERE seq = 2")
    verified = (await gw.admin.get("/v1/audit/verify", headers=gw.as_role("viewer"))).json()
    assert verified["ok"] is False and verified["first_bad_seq"] == 2
    await asyncio.to_thread(edit, "DELETE FROM audit WHERE seq = 2")
    verified = (await gw.admin.get("/v1/audit/verify", headers=gw.as_role("viewer"))).json()
    assert verified["ok"] is False and verified["first_bad_seq"] == 3
