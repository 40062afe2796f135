"""Issue 16 item 11: an audit record the store refuses (it was restarting) is not
dropped: "could not audit approval.held" lost the record while the chain still verified.
Now it is queued in the audit trail, which appends it once the store answers.

In process (the refusal is one injected error on a real store, SQLite and
PostgreSQL); the upstream is real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store.sql import SqlStore
from tests.faults.procs_support import RULES
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import policy_text, started_gateway, until


class RestartingStore(SqlStore):
    """Refuses the first audit append of ``action``, as a store mid-restart does."""

    refuse = "approval.held"

    async def append_audit(self, actor: str, action: str, detail: dict[str, Any],
                           at: Any) -> Any:
        if action == self.refuse:
            self.refuse = ""
            raise ConnectionRefusedError("the database system is starting up")
        return await super().append_audit(actor, action, detail, at)


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    up = FaultUpstream({"/held/x": {"name": "x", "v": 1}})
    yield up
    up.close()


async def test_an_audit_record_refused_by_the_store_is_appended_later(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    policies = {"up.yaml": policy_text(upstream.url, RULES, upstream="up")}
    async with started_gateway(tmp_path, store_url, policies,
                               store=RestartingStore(store_url)) as gw:
        held = await gw.agent.patch("/up/held/x", json={"v": 2})
        assert held.status_code == 202, held.text
        call_id = held.json()["approval"]["id"]

        async def recorded() -> bool:
            items = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()
            return any(r["action"] == "approval.held" and r["detail"]["approval"] == call_id
                       for r in items["items"])

        await until(recorded, "the refused approval.held record")
        verified = (await gw.admin.get("/v1/audit/verify", headers=gw.as_role("viewer"))).json()
        assert verified["ok"], verified


WRITING_GET = """
- id: terminate
  match: {methods: [GET], path: "/act/{id}"}
  action: allow
  effect: write
  undo: none
"""


async def test_a_get_the_policy_calls_a_write_is_audited_so_recovery_adds_no_record(
        tmp_path: Path, store_url: str) -> None:
    """``effect: write`` on a GET (``GET /?Action=TerminateInstances``): journaled like
    any write, but the listener audited only mutating methods, so no record named the
    entry and recovery (``unaudited``, after a failover or for a dead process) took it
    for a record the store lost and appended a "recovered" one. Its record is the
    listener's, naming the entry, and recovery finds nothing to add."""
    up = FaultUpstream({"/act/x": {"name": "x"}})
    try:
        policies = {"up.yaml": policy_text(up.url, WRITING_GET, upstream="up")}
        async with started_gateway(tmp_path, store_url, policies) as gw:
            sent = await gw.agent.get("/up/act/x")
            assert sent.status_code == 200, sent.text
            entries = await gw.journal()
            assert [e["method"] for e in entries] == ["GET"], entries
            await gw.gateway.audit.flush()
            items = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()
            assert [r["action"] for r in items["items"]
                    if r["detail"].get("journal") == entries[0]["id"]] == ["call.allow"]
            store = gw.gateway.store
            assert await store.unaudited(store.process) == []
    finally:
        up.close()
