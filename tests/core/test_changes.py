"""Before -> after of one journaled write, and rollback's treatment of undone entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core.changes import entry_changes
from gateway.core.model import Checkpoint, JournalEntry, JournalState, Undo
from gateway.core.rollback import StepStatus, plan_rollback


@pytest.mark.parametrize(("method", "prior", "response", "after", "sent", "expected"), [
    ("PATCH", {"plan": "pro", "n": 1}, '{"plan": "free", "n": 1}', None, None,
     [("plan", "pro", "free")]),
    ("PATCH", {"plan": "pro"}, None, None, '{"plan": "free"}', [("plan", "pro", "free")]),
    ("PATCH", {"plan": "pro"}, "not json", {"plan": "gold"}, None, [("plan", "pro", "gold")]),
    ("PUT", {"a": 1, "b": 2}, None, None, '{"a": 1}', [("b", 2, None)]),
    ("DELETE", {"a": 1}, None, None, None, [("a", 1, None)]),
    ("POST", None, '{"id": "x"}', None, None, [("id", None, "x")]),
    ("POST", None, None, None, "text", []),
])
def test_entry_changes(method: str, prior: Any, response: str | None, after: Any,
                       sent: str | None, expected: list[tuple[str, Any, Any]]) -> None:
    assert [(c["field"], c["before"], c["after"])
            for c in entry_changes(method, prior, response, after, sent)] == expected


def _entry(n: int, state: JournalState, plan: str | None = None) -> JournalEntry:
    return JournalEntry(
        id=f"e{n}", at=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC), request_id=f"r{n}",
        agent="bot", checkpoint=Checkpoint(run="run-1"), upstream="crm", method="PATCH",
        path="/customers/1", query="", rule="edit", decision="allow", policy_revision="rev",
        request_headers={}, request_body='{"plan": "free"}', request_body_sha256=None,
        request_body_size=16, request_content_type="application/json", prior={"plan": "pro"},
        prior_status=200, capture_path="/customers/1",
        undo=Undo("PUT", "/customers/1", {"plan": "pro"}), reversible=True, state=state,
        status=200, response_body='{"plan": "free"}', rolled_back_plan=plan)


def test_a_rolled_back_entry_is_a_skipped_step_naming_its_plan() -> None:
    plan = plan_rollback([_entry(1, JournalState.ROLLED_BACK, "plan-a"),
                          _entry(2, JournalState.COMPLETED)],
                         plan_id="p", at=datetime(2026, 1, 2, tzinfo=UTC), by="alice",
                         selector={"run": "run-1"}, force=False, dry_run=False,
                         parse=lambda e: {"plan": "free"}, volatile=lambda e: ())
    assert [(s.entry_id, s.status, s.detail) for s in plan.steps] == [
        ("e2", StepStatus.PLANNED, None),
        ("e1", StepStatus.SKIPPED, "already rolled back by plan plan-a")]
    assert plan.to_json()["conflicts"] == [] and plan.irreversible == ()


def test_cel_errors_read_as_text_not_a_python_tuple() -> None:
    from gateway.core.cel import Condition
    from gateway.errors import ConditionError
    cases = [({"request": {"body": {}}}, "no such member in mapping: 'amount'"),
             ({"request": {"body": None}},
              "None with type: 'NoneType' does not support field selection")]
    for activation, reason in cases:
        with pytest.raises(ConditionError) as error:
            Condition("request.body.amount > 10").evaluate(activation)
        assert str(error.value) == f"when 'request.body.amount > 10' could not be evaluated: {reason}"
        assert "<class" not in str(error.value) and "(" != str(error.value).split(": ", 1)[1][0]
    with pytest.raises(ValueError) as invalid:
        Condition("request.body.amount >")
    assert str(invalid.value) == \
        "invalid CEL in when: syntax error at column 21 of 'request.body.amount >'"
