"""Issue 16 item 11: an audit record the store refuses (it was restarting) is not
dropped: "could not audit approval.held" lost the record while the chain still verified.
A held call's record now commits with the call (``HeldCallStore``): a store that
refuses the one refuses the other, and the agent is told nothing was sent.

In process (the refusal is one injected error on a real store, SQLite and
PostgreSQL); the upstream is real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.approvals import HeldCall
from gateway.store.sql import SqlStore
from tests.faults.procs_support import RULES
from tests.faults.procs_upstream import FaultUpstream
from tests.harness import policy_text, started_gateway


class RestartingStore(SqlStore):
    """Refuses the first held call (and so its record), as a store mid-restart does."""

    refusing = True

    async def create_held(self, call: HeldCall, record: Any = None) -> None:
        if self.refusing:
            self.refusing = False
            raise ConnectionRefusedError("the database system is starting up")
        await super().create_held(call, record)


@pytest.fixture
def upstream() -> Iterator[FaultUpstream]:
    up = FaultUpstream({"/held/x": {"name": "x", "v": 1}})
    yield up
    up.close()


async def test_a_hold_the_store_refuses_is_not_made_and_the_next_is_recorded(
        tmp_path: Path, store_url: str, upstream: FaultUpstream) -> None:
    policies = {"up.yaml": policy_text(upstream.url, RULES, upstream="up")}
    async with started_gateway(tmp_path, store_url, policies,
                               store=RestartingStore(store_url)) as gw:
        refused = await gw.agent.patch("/up/held/x", json={"v": 2})
        assert refused.status_code == 503, refused.text
        assert "not sent" in refused.json()["error"]["message"]
        listed = (await gw.admin.get("/v1/approvals", headers=gw.as_role("viewer"))).json()
        assert listed["items"] == []  # no call held without its record

        held = await gw.agent.patch("/up/held/x", json={"v": 2})
        assert held.status_code == 202, held.text
        call_id = held.json()["approval"]["id"]
        items = (await gw.admin.get("/v1/audit", headers=gw.as_role("viewer"))).json()["items"]
        assert [r["detail"]["approval"] for r in items if r["action"] == "approval.held"] \
            == [call_id]
        verified = (await gw.admin.get("/v1/audit/verify", headers=gw.as_role("viewer"))).json()
        assert verified["ok"], verified
    assert upstream.resources["/held/x"]["v"] == 1  # held, never sent


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
