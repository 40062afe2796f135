"""The autonomy report (pure): the numbers that justify giving an agent more rope, or less.

Per rule and agent over a window: calls by decision, held calls approved,
rejected and expired, the override rate, writes rolled back and the median
time operators took to decide; per rule, plain suggestions where the numbers
support one. Suggestions are advice: nothing here changes a policy.

Where the numbers come from (the store reads them, ``build`` adds them up):

- calls by decision: the audit chain's ``call.*`` records, one per decision on
  a mutating call (``ProxyApp._audit``), which name the upstream, the rule
  (``None``: the default) and, off ``enforce``, ``mode`` and ``would_decide``.
  Refusals before any rule was applied (no key, unknown upstream, a malformed
  request) name no upstream and are not counted. Reads are not counted.
- held calls: the approval queue's rows held in the window (``kind`` hold,
  delay, or a promoted shadow write), by status. Approved = approved,
  executed, failed or unknown: an operator (or, for a delay, the clock) let it
  run. Decided = approved + rejected; expired calls were not decided.
- writes rolled back: journal entries of the window in state ``rolled_back``.
- the last drill: the newest ``drill.report`` audit record (``gateway drill --record``).

>>> override_rate(rejected=3, decided=12)
0.25
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.core.model import iso, parse_iso

MIN_SAMPLE = 20  # decisions before a suggestion is made
DECISIONS = ("allow", "deny", "hold", "delay", "shadow", "frozen", "error")
APPROVED = frozenset({"approved", "executed", "failed", "unknown"})


@dataclass(frozen=True, slots=True)
class DecisionCount:
    """Audit records of one upstream, rule, agent, decision and would-be decision."""

    upstream: str
    rule: str | None
    agent: str
    decision: str
    would_decide: str | None
    count: int


@dataclass(frozen=True, slots=True)
class HeldFact:
    """One held call of the window, as the report needs it."""

    upstream: str
    rule: str | None
    agent: str
    kind: str  # hold | delay | shadow (a promoted shadow write)
    status: str
    at: datetime
    decided_at: datetime | None
    decided_by: str | None
    frozen_at_due: bool = False


@dataclass(frozen=True, slots=True)
class RolledBack:
    upstream: str
    rule: str | None
    agent: str
    count: int


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What the loaded policy says about a rule now (``None`` rule: the default)."""

    action: str
    mode: str


def decision_name(action: str, delayed: bool) -> str:
    """``call.hold`` of a delay rule counts as ``delay``."""
    name = action.removeprefix("call.")
    return "delay" if delayed and name == "hold" else name


def override_rate(rejected: int, decided: int) -> float | None:
    return round(rejected / decided, 4) if decided else None


@dataclass
class Tally:
    """The numbers of one rule and agent (or of one rule, summed over agents)."""

    calls: Counter[str] = field(default_factory=Counter)
    would: Counter[str] = field(default_factory=Counter)
    held: Counter[str] = field(default_factory=Counter)
    delayed: Counter[str] = field(default_factory=Counter)
    rolled_back: int = 0
    waits: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.calls.update(other.calls)
        self.would.update(other.would)
        self.held.update(other.held)
        self.delayed.update(other.delayed)
        self.rolled_back += other.rolled_back
        self.waits.extend(other.waits)

    @property
    def rejected(self) -> int:
        return self.held["rejected"] + self.delayed["cancelled"]

    @property
    def decided(self) -> int:
        return self.held["approved"] + self.held["rejected"] + self.delayed["ran"] \
            + self.delayed["cancelled"]

    def to_json(self) -> dict[str, Any]:
        calls = {d: self.calls.get(d, 0) for d in DECISIONS}
        calls.update({d: n for d, n in self.calls.items() if d not in calls})
        return {
            "calls": {**calls, "total": sum(self.calls.values())},
            "would_decide": dict(sorted(self.would.items())),
            "held": {k: self.held.get(k, 0) for k in ("approved", "rejected", "expired",
                                                       "pending")},
            "delayed": {k: self.delayed.get(k, 0) for k in ("ran", "cancelled", "pending",
                                                             "expired", "frozen_at_due")},
            "decided": self.decided,
            "override_rate": override_rate(self.rejected, self.decided),
            "rolled_back": self.rolled_back,
            "median_seconds_to_decide": (round(statistics.median(self.waits), 3)
                                         if self.waits else None),
        }


Key = tuple[str, str | None, str]  # upstream, rule, agent


def _held_into(tally: Tally, fact: HeldFact) -> None:
    outcome = ("approved" if fact.status in APPROVED else fact.status)
    if fact.kind == "delay":
        tally.delayed[{"approved": "ran", "rejected": "cancelled"}.get(outcome, outcome)] += 1
        if fact.frozen_at_due:
            tally.delayed["frozen_at_due"] += 1
        return
    tally.held[outcome] += 1
    by_operator = fact.decided_by is not None and fact.decided_by != "gateway"
    if fact.decided_at is not None and by_operator and outcome in ("approved", "rejected"):
        tally.waits.append(max(0.0, (fact.decided_at - fact.at).total_seconds()))


def tallies(counts: Iterable[DecisionCount], held: Iterable[HeldFact],
            rolled: Iterable[RolledBack]) -> dict[Key, Tally]:
    out: dict[Key, Tally] = {}
    for count in counts:
        tally = out.setdefault((count.upstream, count.rule, count.agent), Tally())
        tally.calls[count.decision] += count.count
        if count.would_decide is not None:
            tally.would[count.would_decide] += count.count
    for fact in held:
        _held_into(out.setdefault((fact.upstream, fact.rule, fact.agent), Tally()), fact)
    for item in rolled:
        out.setdefault((item.upstream, item.rule, item.agent), Tally()).rolled_back += item.count
    return out


def span(since: datetime, until: datetime) -> str:
    """``30 days``, ``6 hours``, ``12 minutes``: the window, for sentences."""
    seconds = max(0.0, (until - since).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = round(seconds / size)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return f"{round(seconds)} seconds"


def build(counts: Iterable[DecisionCount], held: Iterable[HeldFact],
          rolled: Iterable[RolledBack], rules: Mapping[tuple[str, str | None], RuleInfo],
          drill: dict[str, Any] | None, since: datetime, until: datetime,
          now: datetime) -> dict[str, Any]:
    """The report as JSON: ``rows`` (rule and agent), ``rules`` (summed over agents),
    ``drill`` and ``suggestions``."""
    by_key = tallies(counts, held, rolled)
    per_rule: dict[tuple[str, str | None], Tally] = {}
    agents: dict[tuple[str, str | None], list[str]] = {}
    for (upstream, rule, agent), tally in by_key.items():
        per_rule.setdefault((upstream, rule), Tally()).add(tally)
        agents.setdefault((upstream, rule), []).append(agent)

    def describe(upstream: str, rule: str | None) -> dict[str, Any]:
        info = rules.get((upstream, rule))
        return {"upstream": upstream, "rule": rule,
                "action": info.action if info else None, "mode": info.mode if info else None}

    order = sorted(by_key, key=lambda k: (k[0], k[1] or "", k[2]))
    rows = [{**describe(u, r), "agent": a, **by_key[(u, r, a)].to_json()} for u, r, a in order]
    rule_rows = [{**describe(u, r), "agents": sorted(agents[(u, r)]),
                  **per_rule[(u, r)].to_json()}
                 for u, r in sorted(per_rule, key=lambda k: (k[0], k[1] or ""))]
    window = span(since, until)
    advice = [s for u, r in sorted(per_rule, key=lambda k: (k[0], k[1] or ""))
              for s in suggest(u, r, rules.get((u, r)), per_rule[(u, r)], window, drill)]
    return {"since": iso(since), "until": iso(until), "generated_at": iso(now),
            "window": window, "rows": rows, "rules": rule_rows, "drill": drill,
            "suggestions": advice}


def _name(rule: str | None) -> str:
    return f"rule {rule}" if rule is not None else "the default"


def _drill_note(drill: dict[str, Any] | None) -> str:
    if drill is None:
        return "; no drill is recorded: rehearse the stop first (gateway drill --record)"
    timings = ", ".join(f"{phase} {drill[phase + '_ms']:.0f} ms"
                        for phase in ("detect", "stop", "restore")
                        if isinstance(drill.get(phase + "_ms"), (int, float)))
    return f" (last drill {drill.get('verdict', '?')}{': ' + timings if timings else ''})"


def suggest(upstream: str, rule: str | None, info: RuleInfo | None, tally: Tally,
            window: str, drill: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Plain advice for one rule, where its numbers support some; never applied."""
    if info is None:  # the rule is gone from the loaded policy
        return []
    name, out = _name(rule), []

    def say(text: str, step: str) -> None:
        out.append({"upstream": upstream, "rule": rule, "step": step, "text": text})

    held = tally.held["approved"] + tally.held["rejected"]
    if info.mode == "enforce" and info.action == "hold" and held >= MIN_SAMPLE:
        rate = tally.held["rejected"] / held
        if rate <= 0.01:
            rejected = tally.held["rejected"]
            say(f"{name}: {held} held, {rejected} rejected in {window}: consider allow with a "
                f"tripwire{_drill_note(drill)}", "allow")
        elif rate >= 0.5:
            say(f"{name}: {tally.held['rejected']} of {held} held calls rejected in {window}: "
                "consider deny", "deny")
    ran = tally.delayed["ran"] + tally.delayed["cancelled"]
    if info.mode == "enforce" and info.action == "delay" and ran >= MIN_SAMPLE \
            and tally.delayed["cancelled"] == 0:
        say(f"{name}: {ran} delayed, none cancelled in {window}: consider allow with a tripwire"
            f"{_drill_note(drill)}", "allow")
    total = sum(tally.calls.values())
    if info.mode == "observe" and total >= MIN_SAMPLE:
        refused = tally.would["deny"] + tally.would["hold"] + tally.would["delay"]
        if refused == 0:
            say(f"{name} (observe): would have stopped none of {total} calls in {window}: "
                "enforcing it changes nothing these agents did; consider mode: enforce",
                "enforce")
        else:
            say(f"{name} (observe): would have denied {tally.would['deny']}, held "
                f"{tally.would['hold'] + tally.would['delay']} of {total} calls in {window}: "
                "review them (journal would_decide) before enforcing", "review")
    shadowed = tally.calls["shadow"]
    if info.mode == "shadow" and shadowed >= MIN_SAMPLE:
        say(f"{name} (shadow): {shadowed} proposed writes in {window}, none sent: review them "
            "(GET /v1/shadow); if they are right, consider mode: enforce with action: hold",
            "hold")
    allowed = tally.calls["allow"]
    if info.mode == "enforce" and info.action == "allow" and allowed >= MIN_SAMPLE \
            and tally.rolled_back / allowed >= 0.05:
        say(f"{name}: {tally.rolled_back} of {allowed} allowed writes rolled back in {window}: "
            "consider hold", "hold")
    return out


def drill_record(report: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a drill's JSON report (``gateway drill``) kept in the audit chain:
    verdict, when, and its detect / stop / restore times. ValueError if it is not one."""
    if not isinstance(report, Mapping) or report.get("verdict") not in ("PASS", "FAIL"):
        raise ValueError("not a drill report: verdict must be PASS or FAIL")
    timings = report.get("timings_ms")
    if not isinstance(timings, Mapping):
        raise ValueError("not a drill report: timings_ms is missing")
    out: dict[str, Any] = {"verdict": report["verdict"]}
    for phase in ("detect", "stop", "restore", "total"):
        value = timings.get(phase)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise ValueError(f"timings_ms.{phase} must be a number of milliseconds or null")
        out[f"{phase}_ms"] = value
    for key in ("started_at", "finished_at"):
        value = report.get(key)
        try:
            out[key] = iso(parse_iso(value)) if isinstance(value, str) else None
        except ValueError:
            out[key] = None
        if out[key] is None:
            raise ValueError(f"{key} must be an ISO-8601 time")
    options = report.get("options")
    if isinstance(options, Mapping):
        out["stop_by"] = options.get("stop")
        out["writes"] = options.get("writes")
    counts = report.get("counts")
    if isinstance(counts, Mapping):
        out["changes_lost"] = counts.get("changes_lost")
    return out
