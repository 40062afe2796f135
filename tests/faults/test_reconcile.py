"""Issue 16, items 3, 4 (contract) and 12: rollback reconciles a write whose outcome is
unknown by reading the resource. Before: an ``unknown`` entry was listed irreversible and
never undone (and a timed-out or cut-off one was ``failed`` and skipped)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.conftest import Gateway
from tests.faults.upstream import DROP, HALF_BODY, HANG, IDLE_CLOSE, FaultyUpstream

C1 = "/customers/c1"
PRIOR = {"id": "c1", "plan": "pro", "balance": 1200}


@pytest.mark.parametrize(("fault", "edited", "step", "after"), [
    (DROP, False, "applied", PRIOR),  # landed: compensated as a completed write
    (HANG, False, "applied", PRIOR),  # landed, then timed out
    (IDLE_CLOSE, False, "skipped", PRIOR),  # never landed: nothing to undo
    (DROP, True, "conflict", {**PRIOR, "plan": "free", "balance": 5}),  # landed, then edited
])
def test_rollback_reconciles_an_unknown_patch(upstream: FaultyUpstream,
                                              launch: Callable[..., Gateway], fault: str,
                                              edited: bool, step: str, after: dict) -> None:
    upstream.put(C1, dict(PRIOR))
    gateway = launch(extra="timeout: 1\n")
    upstream.script("PATCH", C1, fault)
    response = gateway.agent.patch(C1, json={"plan": "free"})
    assert response.status_code in (502, 504), response.text
    [entry] = gateway.journal()
    assert entry["state"] == "unknown"
    if edited:
        upstream.put(C1, {**PRIOR, "plan": "free", "balance": 5})
    plan = gateway.rollback(entries=[entry["id"]], dry_run=False)
    assert plan["irreversible"] == []
    [only] = plan["steps"]
    assert only["status"] == step, plan
    if step == "skipped":
        assert "nothing landed" in only["detail"]
    assert upstream.get(C1) == after
    assert upstream.methods(C1).count("PUT") == (1 if step == "applied" else 0)
    [entry] = gateway.journal(decision="allow")
    assert entry["state"] == ("rolled_back" if step == "applied" else "unknown")


def test_rollback_reconciles_an_unknown_delete(upstream: FaultyUpstream,
                                               launch: Callable[..., Gateway]) -> None:
    """The issue's item 2 end to end: the DELETE landed and the answer was lost; rollback
    finds the resource gone, as the DELETE would leave it, and puts it back."""
    upstream.put(C1, dict(PRIOR))
    gateway = launch()
    upstream.script("DELETE", C1, DROP)
    assert gateway.agent.delete(C1).status_code == 502
    assert upstream.get(C1) is None
    plan = gateway.rollback(upstream="crm", dry_run=False)
    assert [s["status"] for s in plan["steps"]] == ["applied"], plan
    assert upstream.get(C1) == PRIOR


def test_rollback_undoes_a_create_whose_answer_was_cut(upstream: FaultyUpstream,
                                                       launch: Callable[..., Gateway]) -> None:
    """Item 3 end to end: 201 with ``Location`` and half the body, then the connection
    closes. The entry is ``unknown`` with the undo the head named; rollback finds the new
    resource there and deletes it. Before: ``failed``, skipped, the resource stayed."""
    gateway = launch()
    upstream.script("POST", "/customers", HALF_BODY)
    assert gateway.agent.post("/customers", json={"id": "c10"}).status_code == 502
    assert upstream.get("/customers/c10") == {"id": "c10"}
    [entry] = gateway.journal()
    assert entry["state"] == "unknown"
    plan = gateway.rollback(entries=[entry["id"]], dry_run=False)
    assert [(s["method"], s["path"], s["status"]) for s in plan["steps"]] == [
        ("DELETE", "/customers/c10", "applied")], plan
    assert upstream.get("/customers/c10") is None


def test_a_create_that_never_landed_is_skipped(upstream: FaultyUpstream,
                                              launch: Callable[..., Gateway]) -> None:
    """The head arrived (so the new resource's path is known) but the upstream had not
    kept the resource: the step is skipped, nothing landed."""
    gateway = launch()
    upstream.script("POST", "/customers", HALF_BODY)
    assert gateway.agent.post("/customers", json={"id": "c11"}).status_code == 502
    upstream.resources.pop("/customers/c11")  # gone again, as if never kept
    [entry] = gateway.journal()
    plan = gateway.rollback(entries=[entry["id"]], dry_run=False)
    [step] = plan["steps"]
    assert step["status"] == "skipped" and "nothing landed" in step["detail"], plan
    assert upstream.methods("/customers/c11") == ["GET"]  # read, never deleted
