"""Issue 16, items 2, 3 and 12: what the gateway does when the wire to an upstream breaks.

A write is never sent twice, and its journal entry is ``failed`` only when nothing can
have reached the upstream; otherwise ``unknown``. Each test drives a real ``gateway
serve`` against ``FaultyUpstream``, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.conftest import Gateway
from tests.faults.upstream import DROP, HALF_BODY, HANG, IDLE_CLOSE, STALL, FaultyUpstream

C1 = "/customers/c1"


def test_a_delete_dropped_after_it_landed_is_not_sent_again(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    """Item 2: the capture's connection is reused for the DELETE; the upstream deletes and
    closes before the head. Before: the client re-sent it (GET, DELETE, DELETE), the agent
    got 404, the journal said 404 and rollback skipped it."""
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    upstream.script("DELETE", C1, DROP)
    gateway = launch()
    response = gateway.agent.delete(C1)
    assert response.status_code == 502, response.text
    assert upstream.methods(C1) == ["GET", "DELETE"]
    assert upstream.requests[0].connection == upstream.requests[1].connection  # reused
    assert [e["state"] for e in gateway.journal()] == ["unknown"]


def test_a_put_dropped_before_its_head_is_not_sent_again(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    """Item 2 for PUT, the other "idempotent" method the client used to re-send."""
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    upstream.script("PUT", C1, DROP)
    gateway = launch()
    response = gateway.agent.put(C1, json={"id": "c1", "plan": "free"})
    assert response.status_code == 502, response.text
    assert upstream.methods(C1) == ["GET", "PUT"]
    assert [e["state"] for e in gateway.journal()] == ["unknown"]


def test_a_read_on_a_connection_closed_while_idle_is_retried(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    """Reads may still retry on a fresh connection when the reused one was closed."""
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    gateway = launch()
    assert gateway.agent.get(C1).status_code == 200
    upstream.script("GET", C1, IDLE_CLOSE)
    response = gateway.agent.get(C1)
    assert response.status_code == 200, response.text
    assert response.json()["plan"] == "pro"
    first, closed, again = upstream.requests
    assert closed.fault == IDLE_CLOSE and closed.connection == first.connection
    assert again.connection != first.connection


def test_a_created_resource_whose_answer_was_cut_mid_body_is_unknown(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    """Item 3: 201 and half the body, then the connection closes. Before: ``failed``."""
    gateway = launch()
    response = gateway.agent.post("/customers", json={"id": "c9", "plan": "pro"})
    assert upstream.get("/customers/c9") == {"id": "c9", "plan": "pro"}
    assert response.status_code == 201  # a baseline: the upstream answers normally
    upstream.script("POST", "/customers", HALF_BODY)
    response = gateway.agent.post("/customers", json={"id": "c10", "plan": "pro"})
    assert response.status_code == 502, response.text
    assert upstream.get("/customers/c10") == {"id": "c10", "plan": "pro"}
    assert upstream.methods("/customers") == ["POST", "POST"]
    newest = gateway.journal()[0]
    assert newest["state"] == "unknown", newest
    assert "unknown" not in (gateway.journal()[1]["state"],)


@pytest.mark.parametrize("fault", [HANG, STALL])
def test_a_write_that_timed_out_is_unknown(upstream: FaultyUpstream,
                                           launch: Callable[..., Gateway], fault: str) -> None:
    """Item 12: the upstream applies the PATCH and never answers (``HANG``), or sends the
    head and half the body and stalls (``STALL``). Before: ``failed``."""
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    upstream.script("PATCH", C1, fault)
    gateway = launch(extra="timeout: 1\n")
    response = gateway.agent.patch(C1, json={"plan": "free"})
    assert response.status_code == 504, response.text
    assert upstream.get(C1)["plan"] == "free"
    assert [e["state"] for e in gateway.journal()] == ["unknown"]


def test_a_refused_connection_is_failed(upstream: FaultyUpstream,
                                        launch: Callable[..., Gateway]) -> None:
    """Nothing can have reached an upstream that refused the connection: ``failed``.
    (A write to a resource without capture, so the refusal meets the write itself.)"""
    gateway = launch()
    upstream.refuse()
    response = gateway.agent.post("/customers", json={"id": "c2"})
    assert response.status_code == 502, response.text
    assert [e["state"] for e in gateway.journal()] == ["failed"]
    assert upstream.requests == []


HOLD_RULES = """
- id: read
  match: {methods: [GET], path: "/**"}
  action: allow
- id: held-edit
  match: {methods: [PATCH], path: "/customers/{id}"}
  action: hold
"""


def test_an_approved_call_cut_off_after_it_was_sent_is_unknown(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    """Item 3 for approved calls: the refund was booked and the answer lost. Before: the
    operator and the agent saw ``failed`` (and an agent told failed sends it again)."""
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    gateway = launch(rules=HOLD_RULES)
    held = gateway.agent.patch(C1, json={"plan": "free"})
    assert held.status_code == 202, held.text
    call_id = held.json()["approval"]["id"]
    upstream.script("PATCH", C1, HALF_BODY)
    approved = gateway.admin.post(f"/v1/approvals/{call_id}/approve", json={})
    assert approved.status_code == 502, approved.text
    assert upstream.get(C1)["plan"] == "free"
    assert upstream.methods(C1).count("PATCH") == 1
    status = gateway.admin.get(f"/v1/approvals/{call_id}").json()
    assert status["status"] == "unknown", status
    assert [e["state"] for e in gateway.journal()] == ["unknown"]
