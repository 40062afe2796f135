"""Rollback planning and drift (pure).

A rollback undoes a selection of journaled writes, newest first, each by the
inverse recorded when it was journaled. Before a compensation is sent the
resource is read again and compared with the state the agent's write left
(``expected``): if someone changed it since, the step is a ``conflict`` and is
left alone unless forced. Fields an upstream changes by itself (``volatile``,
e.g. ``updated_at``) are ignored in that comparison.

``plan_rollback`` turns journal entries into steps and a list of writes that
cannot be undone (``undo: none``, no prior state, an intent still open), each
with everything known about it for manual reconciliation. A write whose
outcome is ``unknown`` (it may or may not have landed) is a step all the same,
never skipped unseen: its expected state is what the write would have left
(``would_leave``), and ``reconcile`` decides when it is applied, from the
resource as it is then: still the prior -> skipped (nothing landed); what
the write would leave -> compensated; anything else -> conflict. An entry an earlier plan
already compensated (``rolled_back``) becomes a ``skipped`` step naming that
plan: undoing it again would overwrite the state it restored. A shadowed write
(``mode: shadow``) was never sent: it is skipped too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any

from gateway.core.model import JournalEntry, JournalState, iso
from gateway.core.policy.mcp_schema import TOOLS_CALL

ABSENT = {"__absent__": True}  # the expected state of a deleted resource
PRESENT = {"__present__": True}  # the expected state of a created resource, unread
RECONCILE = ("outcome unknown: the resource is read first and compensated only if the "
             "write landed")


class StepStatus(str, Enum):
    PLANNED = "planned"
    APPLYING = "applying"  # sent or about to be: a resumed plan checks before re-sending
    APPLIED = "applied"
    CONFLICT = "conflict"
    FAILED = "failed"
    SKIPPED = "skipped"


class PlanStatus(str, Enum):
    DRY_RUN = "dry_run"
    RUNNING = "running"
    DONE = "done"  # every step applied or skipped
    INCOMPLETE = "incomplete"  # conflicts or failures left for an operator


@dataclass(frozen=True, slots=True)
class Step:
    seq: int  # order of execution, 0 first (newest write first)
    entry_id: str
    upstream: str
    method: str
    path: str
    body: Any
    content_type: str
    target: str  # the resource compared for drift
    expected: Any  # the state the agent's write left; ABSENT; None = unknown
    volatile: tuple[str, ...] = ()
    status: StepStatus = StepStatus.PLANNED
    detail: str | None = None
    journal_id: str | None = None
    sealed: str | None = None  # the true body and expected state, when redacted here

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "entry": self.entry_id, "upstream": self.upstream,
                "method": self.method, "path": self.path, "body": self.body,
                "content_type": self.content_type, "status": self.status.value,
                "detail": self.detail, "journal_id": self.journal_id}


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    created_at: datetime
    by: str
    selector: dict[str, Any]
    force: bool
    status: PlanStatus
    steps: tuple[Step, ...]
    irreversible: tuple[dict[str, Any], ...] = ()
    skipped: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        steps = [s.to_json() for s in self.steps]
        done = sum(1 for s in self.steps if s.status not in (StepStatus.PLANNED,
                                                             StepStatus.APPLYING))
        progress = {"steps": len(steps), "done": 0 if self.status is PlanStatus.DRY_RUN
                    else done}  # a dry run's predicted conflicts are not progress
        return {"id": self.id, "created_at": iso(self.created_at), "by": self.by,
                "selector": self.selector, "force": self.force, "status": self.status.value,
                "progress": progress, "steps": steps, "irreversible": list(self.irreversible),
                "conflicts": [s for s in steps if s["status"] == StepStatus.CONFLICT.value],
                "skipped": list(self.skipped)}


def _irreversible(entry: JournalEntry, why: str) -> dict[str, Any]:
    return {"entry": entry.id, "at": iso(entry.at), "agent": entry.agent,
            "run": entry.checkpoint.run, "upstream": entry.upstream, "method": entry.method,
            "path": entry.path, "status": entry.status, "rule": entry.rule,
            "reason": why, "prior": entry.prior, "request_body": entry.request_body,
            "response_body": entry.response_body}


def expected_after(entry: JournalEntry, parsed_response: Any, after: Any) -> Any:
    """What the write left behind: the response body, else a read made after it.
    A tool call's response is not the resource: its capture tool is read after it."""
    if entry.method == TOOLS_CALL:
        return after
    if entry.method == "DELETE":
        return ABSENT
    if isinstance(parsed_response, dict) and parsed_response:
        return parsed_response
    return after if isinstance(after, dict) else None


def outcome_unknown(entry: JournalEntry) -> bool:
    """The write may or may not have landed (a timed-out ``failed`` from before the
    contract said ``unknown`` counts too)."""
    return entry.state is JournalState.UNKNOWN or (
        entry.state is JournalState.FAILED and "timed out" in (entry.error or ""))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``patch`` applied to ``target`` (null removes a member)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def would_leave(method: str, prior: Any, sent: Any) -> Any:
    """The state a write would leave if it landed, or None when it cannot be told
    (a tool call, a non-JSON body, a create whose new resource is unknown)."""
    if method == "DELETE":
        return ABSENT
    if method == "POST":  # its undo (from the answer's head) names the new resource
        return PRESENT
    if method == "PATCH" and isinstance(prior, dict) and isinstance(sent, dict):
        return merge_patch(prior, sent)
    if method == "PUT" and isinstance(sent, dict):
        return sent
    return None


def reconcile(step: Step, method: str, prior: Any, prior_absent: bool, current_status: int,
              current: Any) -> tuple[StepStatus, str | None]:
    """For a write whose outcome is unknown, from the resource as it is now: SKIPPED
    (still the prior: nothing landed), PLANNED (what the write would leave: compensate
    it as a completed write) or CONFLICT (anything else), with why."""
    gone = current_status in (404, 410)
    if (prior_absent and gone) or (not prior_absent and 200 <= current_status < 300
                                   and strip(current, step.volatile)
                                   == strip(prior, step.volatile)):
        return StepStatus.SKIPPED, ("outcome unknown, nothing landed: the resource still "
                                    "holds its prior state")
    expected = step.expected
    if expected == ABSENT:
        if gone:
            return StepStatus.PLANNED, None
    elif expected == PRESENT:
        if 200 <= current_status < 300:
            return StepStatus.PLANNED, None
    elif expected is not None and 200 <= current_status < 300 and _holds(
            current, expected, step.volatile, whole=method != "PUT"):
        return StepStatus.PLANNED, None
    if expected is None:
        return StepStatus.CONFLICT, ("outcome unknown and the resource holds neither its "
                                     "prior state nor a known result of the write")
    return StepStatus.CONFLICT, ("outcome unknown and the resource holds neither its prior "
                                 "state nor what the write would have left")


def _holds(current: Any, expected: Any, volatile: tuple[str, ...], whole: bool) -> bool:
    """``current`` is ``expected`` (``whole``), or holds every field of it (a PUT: the
    upstream may add its own, such as an id)."""
    current, expected = strip(current, volatile), strip(expected, volatile)
    if whole or not isinstance(current, dict) or not isinstance(expected, dict):
        return bool(current == expected)
    return all(current.get(k) == v for k, v in expected.items())


def plan_rollback(entries: Iterable[JournalEntry], *, plan_id: str, at: datetime, by: str,
                  selector: dict[str, Any], force: bool, dry_run: bool,
                  parse: Callable[[JournalEntry], Any],
                  volatile: Callable[[JournalEntry], tuple[str, ...]],
                  declared_irreversible: Callable[[JournalEntry], bool] = lambda e: False,
                  sent: Callable[[JournalEntry], Any] = lambda e: None,
                  ) -> Plan:
    """Steps for ``entries`` (any order in, newest first out).

    ``parse(entry)`` gives the expected state the write left (see
    ``expected_after``); ``volatile(entry)`` the fields its rule ignores;
    ``declared_irreversible(entry)`` whether its rule says ``undo: none``;
    ``sent(entry)`` the request body as parsed (for ``would_leave``).
    """
    ordered = sorted(entries, key=lambda e: (e.at, e.id), reverse=True)
    steps: list[Step] = []
    irreversible: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for entry in ordered:
        if entry.state is JournalState.SHADOW:  # mode: shadow: never sent
            skipped.append({"entry": entry.id, "reason": "shadowed (mode: shadow): never sent, "
                            "nothing to undo"})
            continue
        if entry.state is JournalState.ROLLED_BACK:  # undone already: nothing to compare or send
            why = f"already rolled back by plan {entry.rolled_back_plan}"
            if entry.undo is None:
                skipped.append({"entry": entry.id, "reason": why})
                continue
            steps.append(Step(seq=len(steps), entry_id=entry.id, upstream=entry.upstream,
                              method=entry.undo.method, path=entry.undo.path,
                              body=entry.undo.body, content_type=entry.undo.content_type,
                              target=entry.capture_path or entry.undo.path, expected=None,
                              status=StepStatus.SKIPPED, detail=why))
            continue
        unknown = outcome_unknown(entry)
        if unknown and entry.undo is not None and entry.reversible \
                and entry.method != TOOLS_CALL:
            undo = entry.undo
            steps.append(Step(seq=len(steps), entry_id=entry.id, upstream=entry.upstream,
                              method=undo.method, path=undo.path, body=undo.body,
                              content_type=undo.content_type,
                              target=entry.capture_path or (undo.path if entry.method == "POST"
                                                            else entry.path),
                              expected=would_leave(entry.method, entry.prior, sent(entry)),
                              volatile=volatile(entry), detail=RECONCILE))
            continue
        if entry.state is JournalState.INTENT or unknown:
            irreversible.append(_irreversible(entry, "outcome unknown: the call may or may "
                                              "not have reached the upstream" + (
                                                  "" if entry.state is JournalState.INTENT
                                                  else ", and no inverse is known")))
            continue
        if entry.state is JournalState.FAILED or entry.status is None \
                or not 200 <= entry.status < 300:  # a tool's isError: failed with a 200
            skipped.append({"entry": entry.id, "reason": f"the write failed "
                            f"({entry.error or entry.status}); nothing to undo"})
            continue
        if entry.undo is None or not entry.reversible:
            why = ("marked irreversible (undo: none)" if declared_irreversible(entry)
                   else entry.irreversible_reason
                   or "no inverse call is known (no prior state was captured)")
            irreversible.append(_irreversible(entry, why))
            continue
        undo = entry.undo
        target = entry.capture_path or (undo.path if entry.method == "POST" else
                                        "" if entry.method == TOOLS_CALL else entry.path)
        steps.append(Step(seq=len(steps), entry_id=entry.id, upstream=entry.upstream,
                          method=undo.method, path=undo.path, body=undo.body,
                          content_type=undo.content_type, target=target,
                          expected=parse(entry), volatile=volatile(entry)))
    status = PlanStatus.DRY_RUN if dry_run else PlanStatus.RUNNING
    return Plan(plan_id, at, by, selector, force, status, tuple(steps), tuple(irreversible),
                tuple(skipped))


def strip(value: Any, volatile: Iterable[str]) -> Any:
    if isinstance(value, dict):
        ignored = set(volatile)
        return {k: v for k, v in value.items() if k not in ignored}
    return value


def drifted(step: Step, current_status: int, current: Any) -> str | None:
    """Why the resource no longer holds what the agent's write left, or None.

    An unknown expected state (no body, no read after the write) cannot be
    compared: it is reported as drift so nothing is overwritten blindly.
    """
    if step.expected == ABSENT:
        if current_status in (404, 410):
            return None
        return "the resource exists again since the agent deleted it"
    if step.expected is None:
        return "the state the agent's write left is unknown; use force to apply"
    if current_status in (404, 410):
        return "the resource was deleted since the agent's write"
    if not 200 <= current_status < 300:
        return f"reading the resource answered {current_status}"
    if strip(current, step.volatile) != strip(step.expected, step.volatile):
        changed = sorted(k for k in set(_keys(current)) | set(_keys(step.expected))
                         if k not in step.volatile and _get(current, k) != _get(step.expected, k))
        return "changed since the agent's write" + (f": {', '.join(changed)}" if changed else "")
    return None


def _keys(value: Any) -> list[str]:
    return list(value) if isinstance(value, dict) else []


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def already_compensated(step: Step, current_status: int, current: Any,
                        prior: Any) -> bool:
    """On resume: did an ``applying`` step's compensation land before the crash?"""
    if step.method == "DELETE":
        return current_status in (404, 410)
    if isinstance(prior, dict) and 200 <= current_status < 300:
        return bool(strip(current, step.volatile) == strip(prior, step.volatile))
    return False


def with_status(step: Step, status: StepStatus, detail: str | None = None,
                journal_id: str | None = None) -> Step:
    return replace(step, status=status, detail=detail,
                   journal_id=journal_id if journal_id is not None else step.journal_id)
