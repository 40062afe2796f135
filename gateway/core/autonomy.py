"""Earned autonomy: what the gateway does with a decision, by the mode it runs in.

The policy decides (``PolicySet.decide``: allow, deny, hold or delay); the
``mode`` of the rule, else of its file, says whether that decision is carried out:

- ``enforce`` (the default): as decided.
- ``observe``: every call is forwarded, whatever the rules say; what they
  decided is recorded as ``would_decide`` (journal, audit, metrics). For
  rolling out a stricter rule without breaking agents.
- ``shadow``: a write the rules do not deny is journaled with its prior state
  and never sent; the agent gets a projection of the answer
  (``gateway.core.shadow``) and operators a proposed change they may promote
  to a held call. Reads, and writes the rules deny, are handled as enforced.

The kill switch and tripwires are not rules: every mode obeys the kill switch,
and tripwires count and stop the writes that are sent (a shadowed write is not).
A decision that failed (an error while deciding) is always refused.

>>> from gateway.core.model import Decision, Verdict
>>> denied = Decision(Verdict.DENY, "no-deletes", "denied by rule no-deletes", "rev", "crm")
>>> carry_out(denied, "observe", write=True).kind, carry_out(denied, "enforce", write=True).kind
(<Act.FORWARD: 'forward'>, <Act.REFUSE: 'refuse'>)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from gateway.core.model import Decision, Verdict
from gateway.core.policy.compiled import Upstream
from gateway.core.policy.schema import Mode


class Act(str, Enum):
    REFUSE = "refuse"  # 403 policy_denied
    HOLD = "hold"  # the approval queue, until operators decide
    DELAY = "delay"  # the approval queue, run by the gateway once the delay is over
    FORWARD = "forward"  # sent: a read streamed, a write captured and journaled first
    SHADOW = "shadow"  # journaled with its prior state, never sent, answered with a projection


_ENFORCED = {Verdict.ALLOW: Act.FORWARD, Verdict.DENY: Act.REFUSE, Verdict.HOLD: Act.HOLD,
             Verdict.DELAY: Act.DELAY}


@dataclass(frozen=True, slots=True)
class Action:
    """One decided call and what is done with it.

    ``decision`` is what the rules said; ``would_decide`` repeats its verdict
    when the mode did not carry it out (observe; shadowed writes), else None.
    """

    kind: Act
    decision: Decision
    mode: Mode
    write: bool
    would_decide: str | None = None
    delay: float | None = None  # seconds, for Act.DELAY

    @property
    def carried_out(self) -> Decision:
        """The decision as carried out: a forwarded call was allowed, whatever was decided."""
        if self.kind is Act.FORWARD and self.decision.verdict is not Verdict.ALLOW:
            return replace(self.decision, verdict=Verdict.ALLOW,
                           reason=f"{self.decision.reason} (mode {self.mode}: forwarded)")
        return self.decision

    @property
    def outcome(self) -> str:
        """The journal's and the audit's name for what was done."""
        if self.kind is Act.SHADOW:
            return "shadow"
        return self.carried_out.verdict.value

    def facts(self) -> dict[str, Any]:
        """What the audit record of the call carries about its decision (the autonomy
        report counts these): upstream, rule (None: the default), and the mode's traces."""
        facts: dict[str, Any] = {"upstream": self.decision.upstream, "rule": self.decision.rule}
        if self.mode != "enforce":
            facts["mode"] = self.mode
        if self.would_decide is not None:
            facts["would_decide"] = self.would_decide
        if self.kind is Act.DELAY:
            facts["delay"] = self.delay
        return facts


def carry_out(decision: Decision, mode: Mode, write: bool,
              delay: float | None = None) -> Action:
    """The action for ``decision`` in ``mode``; ``write``: the call changes something."""
    if mode == "observe":
        return Action(Act.FORWARD, decision, mode, write, decision.verdict.value)
    if mode == "shadow" and write and decision.verdict is not Verdict.DENY:
        return Action(Act.SHADOW, decision, mode, write, decision.verdict.value)
    kind = _ENFORCED[decision.verdict]
    return Action(kind, decision, mode, write, delay=delay if kind is Act.DELAY else None)


def action_for(upstream: Upstream, decision: Decision, write: bool) -> Action:
    """``carry_out`` with the mode and delay of the rule that decided (or of the file)."""
    rule = upstream.rule(decision.rule) if decision.rule is not None else None
    delay = rule.delay.seconds if rule is not None and rule.delay is not None else None
    return carry_out(decision, upstream.mode_of(decision.rule), write, delay)


def refused(decision: Decision, write: bool) -> Action:
    """A decision that failed is refused in every mode (fail closed)."""
    return Action(Act.REFUSE, decision, "enforce", write)
