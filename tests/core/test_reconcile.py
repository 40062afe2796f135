"""Rollback's reconciliation of writes whose outcome is unknown (pure, table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.rollback import (
    ABSENT,
    PRESENT,
    Step,
    StepStatus,
    merge_patch,
    reconcile,
    would_leave,
)

PRIOR = {"id": "c1", "plan": "pro", "tags": {"a": 1, "b": 2}}


@pytest.mark.parametrize(("target", "patch", "merged"), [
    ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
    ({"a": 1, "b": 2}, {"b": None}, {"a": 1}),
    ({"a": {"x": 1, "y": 2}}, {"a": {"y": None, "z": 3}}, {"a": {"x": 1, "z": 3}}),
    ({"a": 1}, ["list"], ["list"]),
    (None, {"a": 1}, {"a": 1}),
])
def test_merge_patch_is_rfc_7396(target: Any, patch: Any, merged: Any) -> None:
    assert merge_patch(target, patch) == merged


@pytest.mark.parametrize(("method", "prior", "sent", "left"), [
    ("DELETE", PRIOR, None, ABSENT),
    ("PATCH", PRIOR, {"plan": "free"}, {**PRIOR, "plan": "free"}),
    ("PUT", PRIOR, {"plan": "free"}, {"plan": "free"}),
    ("PATCH", "text", {"plan": "free"}, None),
    ("POST", None, {"plan": "free"}, PRESENT),  # its undo names the new resource
])
def test_would_leave(method: str, prior: Any, sent: Any, left: Any) -> None:
    assert would_leave(method, prior, sent) == left


def _step(method: str, expected: Any, volatile: tuple[str, ...] = ()) -> Step:
    return Step(seq=0, entry_id="e", upstream="crm", method="PUT", path="/c/1", body=PRIOR,
                content_type="json", target="/c/1", expected=expected, volatile=volatile)


@pytest.mark.parametrize(("method", "expected", "prior_absent", "status", "current",
                          "verdict"), [
    # still the prior: nothing landed
    ("PATCH", {**PRIOR, "plan": "free"}, False, 200, PRIOR, StepStatus.SKIPPED),
    ("DELETE", ABSENT, False, 200, PRIOR, StepStatus.SKIPPED),
    ("PUT", {"plan": "free"}, True, 404, None, StepStatus.SKIPPED),  # a PUT that creates
    # what the write would leave: compensate
    ("PATCH", {**PRIOR, "plan": "free"}, False, 200, {**PRIOR, "plan": "free"},
     StepStatus.PLANNED),
    ("DELETE", ABSENT, False, 404, None, StepStatus.PLANNED),
    ("PUT", {"plan": "free"}, False, 200, {"id": "c1", "plan": "free"}, StepStatus.PLANNED),
    ("POST", PRESENT, True, 200, {"id": "n1"}, StepStatus.PLANNED),
    ("POST", PRESENT, True, 404, None, StepStatus.SKIPPED),
    # anything else: conflict
    ("PATCH", {**PRIOR, "plan": "free"}, False, 200, {**PRIOR, "plan": "gold"},
     StepStatus.CONFLICT),
    ("PATCH", {**PRIOR, "plan": "free"}, False, 404, None, StepStatus.CONFLICT),
    ("DELETE", ABSENT, False, 200, {**PRIOR, "plan": "new"}, StepStatus.CONFLICT),
    ("PATCH", None, False, 200, {**PRIOR, "plan": "free"}, StepStatus.CONFLICT),
    ("PATCH", {**PRIOR, "plan": "free"}, False, 500, None, StepStatus.CONFLICT),
])
def test_reconcile(method: str, expected: Any, prior_absent: bool, status: int, current: Any,
                   verdict: StepStatus) -> None:
    prior = None if prior_absent else PRIOR
    found, why = reconcile(_step(method, expected), method, prior, prior_absent, status,
                           current)
    assert found is verdict, why
    assert (why is None) is (verdict is StepStatus.PLANNED)


def test_reconcile_ignores_volatile_fields() -> None:
    step = _step("PATCH", {**PRIOR, "plan": "free", "updated_at": 1}, volatile=("updated_at",))
    assert reconcile(step, "PATCH", {**PRIOR, "updated_at": 0}, False, 200,
                     {**PRIOR, "updated_at": 5})[0] is StepStatus.SKIPPED
    assert reconcile(step, "PATCH", {**PRIOR, "updated_at": 0}, False, 200,
                     {**PRIOR, "plan": "free", "updated_at": 9})[0] is StepStatus.PLANNED
