"""The autonomy report's arithmetic and its suggestions, from facts given by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.core.report import (
    DecisionCount,
    HeldFact,
    RolledBack,
    RuleInfo,
    build,
    decision_name,
    drill_record,
    span,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
T30 = T0 + timedelta(days=30)
RULES = {("pay", "big-refund"): RuleInfo("hold", "enforce"),
         ("pay", "refunds"): RuleInfo("allow", "enforce"),
         ("pay", None): RuleInfo("deny", "enforce"),
         ("crm", "no-deletes"): RuleInfo("deny", "observe"),
         ("crm", "edits"): RuleInfo("allow", "shadow"),
         ("crm", "delete-later"): RuleInfo("delay", "enforce")}
DRILL = {"verdict": "PASS", "detect_ms": 120.4, "stop_ms": 3.2, "restore_ms": 88.0}


def held(rule: str, agent: str, status: str, wait: float | None, kind: str = "hold",
         upstream: str = "pay", by: str = "alice") -> HeldFact:
    at = T0 + timedelta(days=1)
    return HeldFact(upstream, rule, agent, kind, status, at,
                    at + timedelta(seconds=wait) if wait is not None else None,
                    by if wait is not None else None)


def row(report: dict, upstream: str, rule: str | None, agent: str) -> dict:
    [found] = [r for r in report["rows"]
               if (r["upstream"], r["rule"], r["agent"]) == (upstream, rule, agent)]
    return found


def test_numbers_per_rule_and_agent() -> None:
    counts = [DecisionCount("pay", "big-refund", "bot", "hold", None, 5),
              DecisionCount("pay", "big-refund", "bot", "frozen", None, 1),
              DecisionCount("pay", "refunds", "bot", "allow", None, 40),
              DecisionCount("pay", None, "bot", "deny", None, 2),
              DecisionCount("crm", "no-deletes", "bot", "allow", "deny", 3)]
    facts = [held("big-refund", "bot", "executed", 30), held("big-refund", "bot", "rejected", 90),
             held("big-refund", "bot", "approved", 60), held("big-refund", "bot", "expired", None),
             held("big-refund", "bot", "pending", None)]
    rolled = [RolledBack("pay", "refunds", "bot", 4)]
    report = build(counts, facts, rolled, RULES, DRILL, T0, T30, T30)
    refund = row(report, "pay", "big-refund", "bot")
    assert refund["calls"]["hold"] == 5 and refund["calls"]["frozen"] == 1
    assert refund["calls"]["total"] == 6
    assert refund["held"] == {"approved": 2, "rejected": 1, "expired": 1, "pending": 1}
    assert refund["decided"] == 3 and refund["override_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert refund["median_seconds_to_decide"] == 60.0
    assert (refund["action"], refund["mode"]) == ("hold", "enforce")
    assert row(report, "pay", "refunds", "bot")["rolled_back"] == 4
    assert row(report, "pay", None, "bot")["calls"]["deny"] == 2
    observed = row(report, "crm", "no-deletes", "bot")
    assert observed["would_decide"] == {"deny": 3} and observed["mode"] == "observe"
    assert report["drill"] == DRILL and report["window"] == "30 days"


def test_rules_sum_their_agents_and_the_median_spans_them() -> None:
    facts = [held("big-refund", "a", "executed", 10), held("big-refund", "b", "executed", 20),
             held("big-refund", "b", "rejected", 40)]
    report = build([], facts, [], RULES, None, T0, T30, T30)
    [rule] = report["rules"]
    assert rule["agents"] == ["a", "b"] and rule["held"]["approved"] == 2
    assert rule["median_seconds_to_decide"] == 20.0


def test_delays_count_as_ran_or_cancelled_and_the_clock_is_not_an_operator() -> None:
    facts = [held("delete-later", "bot", "executed", 300, "delay", "crm", by="gateway"),
             held("delete-later", "bot", "rejected", 12, "delay", "crm"),
             held("delete-later", "bot", "pending", None, "delay", "crm")]
    got = row(build([], facts, [], RULES, None, T0, T30, T30), "crm", "delete-later", "bot")
    assert got["delayed"] == {"ran": 1, "cancelled": 1, "pending": 1, "expired": 0,
                              "frozen_at_due": 0}
    assert got["held"]["approved"] == 0 and got["override_rate"] == 0.5
    assert got["median_seconds_to_decide"] is None


def texts(report: dict) -> list[str]:
    return [s["text"] for s in report["suggestions"]]


def test_a_hold_never_overridden_suggests_allow_with_a_tripwire() -> None:
    facts = [held("big-refund", f"agent-{i % 3}", "executed", 5) for i in range(212)]
    report = build([DecisionCount("pay", "big-refund", "a", "hold", None, 212)], facts, [],
                   RULES, DRILL, T0, T30, T30)
    assert texts(report) == ["rule big-refund: 212 held, 0 rejected in 30 days: consider allow "
                             "with a tripwire (last drill PASS: detect 120 ms, stop 3 ms, "
                             "restore 88 ms)"]
    assert report["suggestions"][0]["step"] == "allow"
    bare = build([], facts, [], RULES, None, T0, T30, T30)
    assert "no drill is recorded" in texts(bare)[0]


def test_too_few_decisions_suggest_nothing_and_a_mostly_rejected_hold_suggests_deny() -> None:
    few = [held("big-refund", "a", "executed", 5) for _ in range(19)]
    assert texts(build([], few, [], RULES, None, T0, T30, T30)) == []
    rejected = [held("big-refund", "a", "rejected", 5) for _ in range(15)] + \
        [held("big-refund", "a", "executed", 5) for _ in range(5)]
    assert texts(build([], rejected, [], RULES, None, T0, T30, T30)) == [
        "rule big-refund: 15 of 20 held calls rejected in 30 days: consider deny"]


def test_observe_shadow_and_rolled_back_allows_have_their_advice() -> None:
    counts = [DecisionCount("crm", "no-deletes", "bot", "allow", "deny", 4),
              DecisionCount("crm", "no-deletes", "bot", "allow", "allow", 26),
              DecisionCount("crm", "edits", "bot", "shadow", "allow", 25),
              DecisionCount("pay", "refunds", "bot", "allow", None, 100)]
    report = build(counts, [], [RolledBack("pay", "refunds", "bot", 6)], RULES, None, T0, T30,
                   T30)
    assert texts(report) == [
        "rule edits (shadow): 25 proposed writes in 30 days, none sent: review them "
        "(GET /v1/shadow); if they are right, consider mode: enforce with action: hold",
        "rule no-deletes (observe): would have denied 4, held 0 of 30 calls in 30 days: review "
        "them (journal would_decide) before enforcing",
        "rule refunds: 6 of 100 allowed writes rolled back in 30 days: consider hold"]
    quiet = build([DecisionCount("crm", "no-deletes", "bot", "allow", "allow", 30)], [], [],
                  RULES, None, T0, T30, T30)
    assert "consider mode: enforce" in texts(quiet)[0]


def test_a_rule_no_longer_loaded_gets_no_advice() -> None:
    facts = [held("gone", "a", "executed", 5) for _ in range(50)]
    report = build([], facts, [], RULES, None, T0, T30, T30)
    assert report["rules"][0]["action"] is None and report["suggestions"] == []


@pytest.mark.parametrize(("action", "delayed", "name"), [
    ("call.hold", True, "delay"), ("call.hold", False, "hold"), ("call.allow", True, "allow"),
    ("call.shadow", False, "shadow")])
def test_decision_name(action: str, delayed: bool, name: str) -> None:
    assert decision_name(action, delayed) == name


def test_span() -> None:
    assert [span(T0, T0 + d) for d in (timedelta(days=30), timedelta(hours=6),
                                       timedelta(minutes=1), timedelta(seconds=4))] == [
        "30 days", "6 hours", "1 minute", "4 seconds"]


def test_a_drill_report_keeps_its_times_and_anything_else_is_refused() -> None:
    report = {"verdict": "PASS", "started_at": "2026-12-01T10:00:00Z",
              "finished_at": "2026-12-01T10:00:02.5Z",
              "timings_ms": {"detect": 10.5, "stop": 1.0, "restore": 80.0, "total": 2500.0},
              "options": {"stop": "tripwire", "writes": 50}, "counts": {"changes_lost": 0}}
    assert drill_record(report) == {
        "verdict": "PASS", "detect_ms": 10.5, "stop_ms": 1.0, "restore_ms": 80.0,
        "total_ms": 2500.0, "started_at": "2026-12-01T10:00:00.000000Z",
        "finished_at": "2026-12-01T10:00:02.500000Z", "stop_by": "tripwire", "writes": 50,
        "changes_lost": 0}
    for broken in ({}, {**report, "verdict": "OK"}, {**report, "timings_ms": {"detect": "x"}},
                   {**report, "started_at": "yesterday"}, {**report, "timings_ms": None}):
        with pytest.raises(ValueError):
            drill_record(broken)
