"""Issue 16, suspected items (wire side), each confirmed or refuted by a test.

1. "A frozen shadow write leaves a proposal that can still be promoted": confirmed. A
   shadowed write was kept as a proposal before the store refused its intent (a freeze
   this process had not heard of yet); the agent got 423, yet an operator could promote
   the proposal and send it. Now the intent comes first: refused, nothing is kept.
2. "A delayed call whose capture keeps failing is retried every second forever":
   confirmed (see ``test_a_delayed_call_whose_capture_keeps_failing_stops``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.core.model import Freeze, FreezeScope, utcnow
from gateway.store.sql import SqlStore
from tests.faults.conftest import Gateway
from tests.faults.upstream import FAIL, FaultyUpstream
from tests.harness import poll

C1 = "/customers/c1"

SHADOW_RULES = """
- id: read
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: allow
  mode: shadow
"""


async def _freeze_behind_its_back(url: str) -> None:
    """A freeze written by another process: this gateway has not heard of it."""
    store = SqlStore(url)
    await store.start()
    try:
        await store.engage(Freeze(FreezeScope.UPSTREAM, "crm", "test", "alice", utcnow()))
    finally:
        await store.close()


def test_a_frozen_shadow_write_leaves_no_proposal(store_url: str, upstream: FaultyUpstream,
                                                  launch: Callable[..., Gateway]) -> None:
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    gateway = launch(rules=SHADOW_RULES)
    asyncio.run(_freeze_behind_its_back(store_url))
    response = gateway.agent.patch(C1, json={"plan": "free"})
    assert response.status_code == 423, response.text
    kept = gateway.admin.get("/v1/approvals", params={"status": "shadow"}).json()["items"]
    assert kept == []  # before: the proposal of a write the agent was told is frozen
    assert "PATCH" not in upstream.methods(C1)  # (its capture GET may or may not have
    # been made: on PostgreSQL the freeze's NOTIFY can reach the gateway first)


DELAY_RULES = """
- id: read
  match: {methods: [GET], path: "/**"}
  action: allow
- id: later
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: delay
  delay: {seconds: 0.1}
"""


def test_a_delayed_call_whose_capture_keeps_failing_stops(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    """Confirmed: each sweep (every second) claimed it, the capture GET failed, the claim
    went back, forever. Now, after three attempts it stops and waits for an operator,
    as a delayed call that fell due under a freeze does; approved, it runs once."""
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    upstream.script("GET", C1, FAIL, times=None)
    gateway = launch(rules=DELAY_RULES)
    delayed = gateway.agent.patch(C1, json={"plan": "free"})
    assert delayed.status_code == 202, delayed.text
    call_id = delayed.json()["approval"]["id"]

    def stopped() -> dict | None:  # the list: showing one call reads its target
        listed = gateway.admin.get("/v1/approvals", params={"status": "pending"}).json()
        return next((v for v in listed["items"] if v["id"] == call_id
                     and v.get("delay_failed")), None)

    view = poll(stopped, "the delayed call to stop retrying", timeout=30)
    assert view["status"] == "pending" and view["due_at"] is None
    assert view["delay_failed"]["attempts"] == 3
    assert upstream.methods(C1) == ["GET"] * 3  # three captures, no PATCH
    upstream.clear("GET", C1)
    approved = gateway.admin.post(f"/v1/approvals/{call_id}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert upstream.methods(C1) == ["GET"] * 4 + ["PATCH"]
    assert upstream.get(C1)["plan"] == "free"
