"""What is done with a decision in each mode (table-driven)."""

from __future__ import annotations

import pytest

from gateway.core.autonomy import Act, action_for, carry_out, refused
from gateway.core.model import Decision, Verdict
from gateway.core.policy.loader import compile_upstream
from gateway.core.policy.schema import PolicyFile, Rule


def decided(verdict: Verdict, rule: str | None = "r") -> Decision:
    return Decision(verdict, rule, f"{verdict.value} by rule", "rev", "crm")


CASES = [
    # mode, verdict, write, act, outcome, would_decide
    ("enforce", Verdict.ALLOW, True, Act.FORWARD, "allow", None),
    ("enforce", Verdict.DENY, True, Act.REFUSE, "deny", None),
    ("enforce", Verdict.HOLD, True, Act.HOLD, "hold", None),
    ("enforce", Verdict.DELAY, True, Act.DELAY, "delay", None),
    ("observe", Verdict.DENY, True, Act.FORWARD, "allow", "deny"),
    ("observe", Verdict.HOLD, True, Act.FORWARD, "allow", "hold"),
    ("observe", Verdict.DELAY, False, Act.FORWARD, "allow", "delay"),
    ("observe", Verdict.ALLOW, True, Act.FORWARD, "allow", "allow"),
    ("shadow", Verdict.ALLOW, True, Act.SHADOW, "shadow", "allow"),
    ("shadow", Verdict.HOLD, True, Act.SHADOW, "shadow", "hold"),
    ("shadow", Verdict.DELAY, True, Act.SHADOW, "shadow", "delay"),
    ("shadow", Verdict.DENY, True, Act.REFUSE, "deny", None),  # denials stay denials
    ("shadow", Verdict.ALLOW, False, Act.FORWARD, "allow", None),  # reads go through
    ("shadow", Verdict.HOLD, False, Act.HOLD, "hold", None),
]


@pytest.mark.parametrize(("mode", "verdict", "write", "act", "outcome", "would"), CASES)
def test_carry_out(mode: str, verdict: Verdict, write: bool, act: Act, outcome: str,
                   would: str | None) -> None:
    action = carry_out(decided(verdict), mode, write, delay=5.0)  # type: ignore[arg-type]
    assert (action.kind, action.outcome, action.would_decide) == (act, outcome, would)
    assert action.carried_out.rule == "r"
    assert action.delay == (5.0 if act is Act.DELAY else None)


def test_facts_name_the_rule_and_only_what_the_mode_adds() -> None:
    assert carry_out(decided(Verdict.ALLOW), "enforce", True).facts() == {
        "upstream": "crm", "rule": "r"}
    assert carry_out(decided(Verdict.DENY, None), "observe", True).facts() == {
        "upstream": "crm", "rule": None, "mode": "observe", "would_decide": "deny"}
    assert carry_out(decided(Verdict.DELAY), "enforce", True, 30).facts() == {
        "upstream": "crm", "rule": "r", "delay": 30}


def test_a_failed_decision_is_refused_even_in_observe_mode() -> None:
    action = refused(decided(Verdict.DENY, None), write=True)
    assert action.kind is Act.REFUSE and action.mode == "enforce"


def test_a_rule_mode_overrides_the_file_and_delay_comes_from_the_rule() -> None:
    spec = PolicyFile(upstream="crm", base_url="http://h", mode="observe", rules=(
        Rule(id="strict", action="deny", mode="enforce"),
        Rule(id="later", action="delay", delay={"seconds": 60}),  # type: ignore[arg-type]
    ))
    upstream = compile_upstream(spec, "crm.yaml", {})
    assert action_for(upstream, decided(Verdict.DENY, "strict"), True).kind is Act.REFUSE
    assert action_for(upstream, decided(Verdict.DENY, None), True).kind is Act.FORWARD
    later = action_for(upstream, decided(Verdict.DELAY, "later"), True)
    assert later.kind is Act.FORWARD and later.would_decide == "delay"  # the file observes
    enforcing = compile_upstream(spec.model_copy(update={"mode": "enforce"}), "crm.yaml", {})
    delayed = action_for(enforcing, decided(Verdict.DELAY, "later"), True)
    assert delayed.kind is Act.DELAY and delayed.delay == 60
