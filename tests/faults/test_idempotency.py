"""``idempotency: {header: NAME}`` (policy file or rule): every write the gateway sends
carries NAME set to its journal entry id unless the agent set one; approved and delayed
calls and rollback's compensations included. Before: the key was refused by the schema."""

from __future__ import annotations

from collections.abc import Callable

from tests.faults.conftest import Gateway
from tests.faults.upstream import FaultyUpstream
from tests.harness import poll

C1 = "/customers/c1"

RULES = """
- id: read
  match: {methods: [GET], path: "/**"}
  action: allow
- id: edit
  match: {methods: [PATCH, PUT], path: "/customers/{id}"}
  action: allow
- id: create
  match: {methods: [POST], path: "/customers"}
  action: allow
  idempotency: {header: X-Request-Key}
- id: held-delete
  match: {methods: [DELETE], path: "/customers/{id}"}
  action: hold
- id: delayed-refund
  match: {methods: [POST], path: "/refunds"}
  action: delay
  delay: {seconds: 0.2}
"""


def test_writes_carry_the_journal_entry_id_as_idempotency_key(
        upstream: FaultyUpstream, launch: Callable[..., Gateway]) -> None:
    upstream.put(C1, {"id": "c1", "plan": "pro"})
    gateway = launch(rules=RULES, extra="idempotency: {header: Idempotency-Key}\n")
    assert gateway.agent.patch(C1, json={"plan": "free"}).status_code == 200
    assert gateway.agent.patch(C1, json={"plan": "x"},
                               headers={"Idempotency-Key": "mine"}).status_code == 200
    assert gateway.agent.post("/customers", json={"id": "c2"}).status_code == 201
    held = gateway.agent.delete(C1)
    assert held.status_code == 202, held.text
    approved = gateway.admin.post(f"/v1/approvals/{held.json()['approval']['id']}/approve",
                                  json={})
    assert approved.status_code == 200, approved.text
    assert gateway.agent.post("/refunds", json={"amount": 5}).status_code == 202
    poll(lambda: upstream.methods("/refunds"), "the delayed call")
    poll(lambda: all(e["state"] != "intent" for e in gateway.journal()), "its outcome")
    entries = {(e["method"], e["path"]): e["id"] for e in gateway.journal(limit=50)
               if e["decision"] != "rollback"}
    writes = [r for r in upstream.requests if r.method != "GET"]
    keys = [(r.method, r.path, r.headers.get("idempotency-key"), r.headers.get("x-request-key"))
            for r in writes]
    assert keys == [
        ("PATCH", C1, entries_for(gateway, "PATCH", 0), None),
        ("PATCH", C1, "mine", None),
        ("POST", "/customers", None, entries[("POST", "/customers")]),
        ("DELETE", C1, entries[("DELETE", C1)], None),
        ("POST", "/refunds", entries[("POST", "/refunds")], None),
    ]
    # rollback's compensations are writes too
    plan = gateway.rollback(entries=[entries[("DELETE", C1)]], dry_run=False)
    [step] = plan["steps"]
    assert step["status"] == "applied", plan
    assert upstream.requests[-1].headers.get("idempotency-key") == step["journal_id"]


def entries_for(gateway: Gateway, method: str, index: int) -> str:
    """The ``index``-th oldest journal entry of ``method`` (several share a path)."""
    ordered = [e for e in reversed(gateway.journal(limit=50)) if e["method"] == method]
    return str(ordered[index]["id"])
