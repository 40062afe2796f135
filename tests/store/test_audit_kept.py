"""A live process's writes keep their audit records: one the store lost (a crash or a
failover: the decisions commit without waiting for the disk or the standby) is
appended again from the journal by the process that journaled the write, and only
that one: an allowed, an approved and a delayed call each keep exactly their own
records, with nothing appended twice. Both stores; the failover itself is in
``tests/e2e/test_failover_audit.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.core.model import parse_iso
from gateway.demo.crm import CRM, create_app
from tests.harness import policy_text, serve_app, started_gateway, until

RULES = """
- id: read-all
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit-customer
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
- id: held-deal
  match: {methods: [PATCH], path: "/deals/{id}"}
  action: hold
  approval: {wait: 0, expires: 3600}
- id: delete-later
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: delay
  delay: {seconds: 0.1}
"""


@pytest.fixture
async def crm() -> AsyncIterator[tuple[CRM, str]]:
    app = create_app(token="t")
    async with serve_app(app) as url:
        yield app, url


async def _forget(store_url: str, seq: int) -> None:
    engine = create_async_engine(store_url)
    async with engine.begin() as connection:
        if store_url.startswith("postgresql"):
            await connection.execute(text("SET session_replication_role = replica"))
        await connection.execute(text(f"DELETE FROM audit WHERE seq = {seq}"))
    await engine.dispose()


async def test_a_live_process_appends_again_only_the_records_the_store_lost(
        tmp_path: Path, store_url: str, crm: tuple[CRM, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    policy = policy_text(crm[1], RULES, extra='credentials: {header: Authorization, '
                         'value: "Bearer t"}\n')
    async with started_gateway(tmp_path, store_url, {"crm.yaml": policy}, upstream_timeout=1,
                               executor_lease=0.6, audit_checkpoint_interval=3600) as gw:
        approver = gw.as_role("approver")
        held = await gw.agent.patch("/crm/deals/deal_1", json={"stage": "won"})
        assert held.status_code == 202, held.text
        approved = await gw.admin.post(f"/v1/approvals/{held.json()['approval']['id']}/approve",
                                       json={}, headers=approver)
        assert approved.json()["status"] == "executed", approved.text
        delayed = await gw.agent.delete("/crm/customers/cus_3")
        assert delayed.status_code == 202, delayed.text

        async def executed() -> bool:
            calls = (await gw.admin.get("/v1/approvals", headers=approver)).json()["items"]
            return any(c["path"] == "/customers/cus_3" and c["status"] == "executed"
                       for c in calls)
        await until(executed, "the delayed call executed")
        assert (await gw.agent.patch("/crm/customers/cus_1", json={"plan": "x"})).status_code \
            == 200
        assert (await gw.agent.patch("/crm/customers/cus_2", json={"plan": "y"})).status_code \
            == 200
        await gw.gateway.audit.flush()
        records = (await gw.admin.get("/v1/audit", headers=approver)).json()["items"]
        last = records[-1]
        assert last["action"] == "call.allow" and last["detail"]["path"].endswith("cus_2")
        await _forget(store_url, last["seq"])  # lost by the store: the chain a prefix still
        # ... as a server that restarted or was replaced loses it: recovery looks for lost
        # records once it sees another server answer (here, as if one had)
        store = gw.gateway.recovery.store
        seen = await store.incarnation()

        async def restarted() -> str:
            return f"{seen} (restarted)"
        monkeypatch.setattr(store, "incarnation", restarted)

        entries = (await gw.admin.get("/v1/journal", headers=approver)).json()["items"]
        assert len(entries) == 4, entries
        lost = next(e["id"] for e in entries if e["path"] == "/customers/cus_2")

        async def listed() -> list[dict[str, Any]]:
            return list((await gw.admin.get("/v1/audit", headers=approver)).json()["items"])

        def naming(entry: str) -> list[dict[str, Any]]:
            return [r for r in records if entry in (r["detail"].get("journal"),
                                                    r["detail"].get("journal_id"))]

        async def found_again() -> bool:
            return any(r["detail"].get("journal") == lost for r in await listed())
        await until(found_again, "the lost record appended again")
        newest = max(parse_iso(e["at"]) for e in entries)
        recovery = gw.gateway.recovery  # and every other entry looked at too
        await until(lambda: recovery._audited_to > newest, "recovery past every entry")
        records = await listed()
        again = naming(lost)
        assert [r["action"] for r in again] == ["call.allow"], again
        assert "the store lost the record" in again[0]["detail"]["recovered"]
        assert [r for r in records if "recovered" in r["detail"]] == again
        for entry in entries:
            assert naming(entry["id"]), entry
        verified = (await gw.admin.get("/v1/audit/verify", headers=approver)).json()
        assert verified["ok"] is True, verified
