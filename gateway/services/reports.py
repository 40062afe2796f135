"""The autonomy report at run time: the store's counts, the loaded rules, the last drill.

The arithmetic and the suggestions are ``gateway.core.report``'s; this module
gathers what they need. How the gateway learns a drill's times: ``gateway
drill --record`` posts the drill's JSON report to ``POST /v1/drills`` once it
has run (the drill runs its own scratch gateway), and ``record_drill`` appends
its facts to the audit chain as ``drill.report``; the newest one is the
report's "last drill".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.core import report
from gateway.core.model import AuditRecord, iso
from gateway.core.policy.decide import PolicySet
from gateway.ports import AuditStore, ReportStore

DRILL_ACTION = "drill.report"


def rule_infos(policies: PolicySet) -> dict[tuple[str, str | None], report.RuleInfo]:
    """Every rule's action and mode as loaded now; ``(upstream, None)`` is the default's."""
    infos: dict[tuple[str, str | None], report.RuleInfo] = {}
    for name, upstream in policies.upstreams.items():
        infos[(name, None)] = report.RuleInfo(upstream.spec.default, upstream.spec.mode)
        for rule in upstream.spec.rules:
            infos[(name, rule.id)] = report.RuleInfo(rule.action, upstream.mode_of(rule.id))
    return infos


def drill_of(record: AuditRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {**record.detail, "recorded_at": iso(record.at), "recorded_by": record.actor,
            "audit_seq": record.seq}


async def autonomy_report(store: ReportStore, policies: PolicySet, since: datetime, until: datetime,
                          upstream: str | None, now: datetime) -> dict[str, Any]:
    counts = await store.decision_counts(since, until, upstream)
    held = await store.held_facts(since, until, upstream)
    rolled = await store.rolled_back_counts(since, until, upstream)
    drill = drill_of(await store.last_audit(DRILL_ACTION))
    built = report.build(counts, held, rolled, rule_infos(policies), drill, since, until, now)
    return {**built, "upstream": upstream}


async def record_drill(store: AuditStore, operator: str, data: Any, at: datetime) -> AuditRecord:
    """Keep a drill's times in the audit chain; ValueError if ``data`` is no drill report."""
    return await store.append_audit(operator, DRILL_ACTION, report.drill_record(data), at)
