"""The drill's verdict and report: ``drill-<timestamp>.json``, ``.md`` and a summary.

``build`` judges what ``gateway.drill.run.run_drill`` found (``Findings``) and
turns it into one plain dict, the JSON report; the rest renders and saves it.
PASS needs every check: the agent was stopped by the freeze and nothing got
past it, the final state equals the initial one (volatile fields ignored),
no journaled write was lost (conflict, failure, irreversible), and the audit
chain verifies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.core.model import iso
from gateway.core.rollback import Plan, StepStatus
from gateway.drill.findings import AGENT, TRIPWIRE, VOLATILE, Findings

PHASES = (("detect", "first bad write -> freeze engaged"),
          ("stop", "freeze engaged -> first 423 seen by the agent"),
          ("restore", "rollback start -> finish"),
          ("total", "whole drill"))

COUNTS = (("writes_sent", "writes sent by the agent"),
          ("writes_through", "writes that went through (2xx)"),
          ("writes_stopped", "writes stopped (423)"),
          ("writes_refused_other", "writes refused otherwise"),
          ("writes_after_stop", "writes through after the first 423"),
          ("journaled", "journal entries of the run"),
          ("nothing_to_undo", "journaled but refused or failed: nothing to undo"),
          ("rollback_steps", "rollback steps"),
          ("undone", "undone (applied)"),
          ("conflicts", "conflicts"),
          ("failed", "failed"),
          ("irreversible", "irreversible"),
          ("changes_lost", "changes lost"),
          ("customers_initial", "customers before"),
          ("customers_final", "customers after"))


def differences(initial: dict[str, dict[str, Any]], final: dict[str, dict[str, Any]],
                volatile: Iterable[str] = ("updated_at",)) -> list[dict[str, Any]]:
    """What differs, ignoring volatile fields: missing, extra or changed customers."""
    ignored = set(volatile)
    out: list[dict[str, Any]] = []
    for cid in sorted(initial.keys() | final.keys()):
        before, after = initial.get(cid), final.get(cid)
        if after is None:
            out.append({"id": cid, "change": "missing"})
        elif before is None:
            out.append({"id": cid, "change": "extra"})
        else:
            fields = sorted(k for k in before.keys() | after.keys()
                            if k not in ignored and before.get(k) != after.get(k))
            if fields:
                out.append({"id": cid, "change": "changed", "fields": fields})
    return out


def changes_lost(plan: Plan) -> int:
    """Journaled writes not undone: steps in conflict or failed, and irreversible writes."""
    undone = sum(1 for s in plan.steps if s.status in (StepStatus.APPLIED, StepStatus.SKIPPED))
    return len(plan.steps) - undone + len(plan.irreversible)


def build(found: Findings) -> dict[str, Any]:
    """The JSON report, verdict included."""
    log, plan, options = found.agent, found.plan, found.options
    diff = differences(found.initial, found.final, VOLATILE)
    lost = changes_lost(plan)
    counts = {s.value: sum(1 for x in plan.steps if x.status is s) for s in StepStatus}
    freeze_at = datetime.fromisoformat(found.freeze["at"].replace("Z", "+00:00")).timestamp() \
        if found.freeze else None
    checks = [
        ("agent stopped by the freeze (423)", log.first_423 is not None and freeze_at is not None,
         f"after {log.sent - log.stopped} writes" if log.first_423 else "never stopped"),
        ("no write got past the freeze after the first 423", log.leaked == 0,
         f"{log.leaked} did"),
        ("final state equals initial (updated_at ignored)", not diff,
         f"{len(diff)} customers differ"),
        ("no journaled write lost", lost == 0, f"{lost} lost"),
        ("audit chain verifies", found.audit.get("ok") is True,
         f"{found.audit.get('count')} records"),
    ]
    limit = found.tripwire_limit
    return {
        "version": 1,
        "verdict": "PASS" if all(ok for _, ok, _ in checks) else "FAIL",
        "final_equals_initial": not diff,
        "changes_lost": lost,
        "started_at": iso(found.started_at), "finished_at": iso(datetime.now(UTC)),
        "options": {"stop": options.stop, "writes": options.writes,
                    "base_url": options.base_url, "database": _redact(options.database_url)},
        "setup": {"upstream": found.base_url,
                  "upstream_kind": "sandbox" if options.base_url else "demo",
                  "proxy": found.proxy_url, "agent": AGENT, "run": found.run,
                  "tripwire": {"id": TRIPWIRE, "kind": "writes", "limit": limit, "window": 60,
                               "per": "agent", "action": "freeze"} if limit else None},
        "timings_ms": {"detect": _between(log.first_write, freeze_at),
                       "stop": _between(freeze_at, log.first_423),
                       "restore": round(found.restore_ms, 1), "total": round(found.total_ms, 1)},
        "times": {"first_write": _iso(log.first_write), "freeze_engaged": _iso(freeze_at),
                  "first_423": _iso(log.first_423)},
        "counts": {"writes_sent": log.sent, "writes_through": log.succeeded,
                   "writes_stopped": log.stopped, "writes_refused_other": log.other,
                   "writes_after_stop": log.leaked, "journaled": found.journaled,
                   "rollback_steps": len(plan.steps), "undone": counts["applied"],
                   "conflicts": counts["conflict"], "failed": counts["failed"],
                   "nothing_to_undo": len(plan.skipped) + counts["skipped"],
                   "irreversible": len(plan.irreversible), "changes_lost": lost,
                   "customers_initial": len(found.initial), "customers_final": len(found.final)},
        "checks": [{"check": name, "ok": ok, "detail": detail} for name, ok, detail in checks],
        "freeze": found.freeze,
        "stopped_by": log.stopped_by,
        "agent_error": log.error,
        "rollback": plan.to_json(),
        "differences": diff,
        "audit": found.audit,
        "steps": found.steps,
    }


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000, 1)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else iso(datetime.fromtimestamp(epoch, UTC))


def _redact(url: str | None) -> str:
    if url is None:
        return "temporary SQLite"
    from gateway.store.diagnose import safe_url  # several hosts, a password in the query
    return safe_url(url)


def save(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write both files in ``out`` (created); a name already taken gets a suffix."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = report["started_at"].replace("-", "").replace(":", "").split(".")[0] + "Z"
    stem, n = f"drill-{stamp}", 1
    while (out / f"{stem}.json").exists() or (out / f"{stem}.md").exists():
        n += 1
        stem = f"drill-{stamp}-{n}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    options, setup = report["options"], report["setup"]
    lines = [
        f"# Gateway drill: {report['verdict']}", "",
        f"- started {report['started_at']}, finished {report['finished_at']}",
        f"- stop by **{options['stop']}**, up to {options['writes']} bad writes by "
        f"`{setup['agent']}` (run `{setup['run']}`)",
        f"- upstream: {setup['upstream_kind']} at {setup['upstream']}; "
        f"store: {options['database']}",
    ]
    if setup["tripwire"]:
        tw = setup["tripwire"]
        lines.append(f"- tripwire `{tw['id']}`: {tw['kind']}, limit {tw['limit']} per "
                     f"{tw['window']}s per {tw['per']} -> {tw['action']}")
    lines += ["", "## Timings", "", "| phase | from -> to | ms |", "| --- | --- | ---: |"]
    lines += [f"| {name} | {what} | {_ms(report['timings_ms'][name])} |" for name, what in PHASES]
    lines += ["", "## Counts", "", "| count | value |", "| --- | ---: |"]
    lines += [f"| {what} | {report['counts'][key]} |" for key, what in COUNTS]
    lines += ["", "## Checks", "", "| check | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {c['check']} | {'ok' if c['ok'] else '**FAILED**'} | {_cell(c['detail'])} |"
              for c in report["checks"]]
    lines += ["", "## Steps", ""]
    lines += [f"{s['n']}. `+{s['elapsed_ms']:.1f} ms` **{s['step']}**: {s['detail']}"
              for s in report["steps"]]
    plan = report["rollback"]
    lines += ["", f"## Rollback plan `{plan['id']}` ({plan['status']})", ""]
    if plan["steps"]:
        lines += ["| # | compensation | path | status | detail |", "| ---: | --- | --- | --- | --- |"]
        lines += [f"| {s['seq']} | {s['method']} | `{s['path']}` | {s['status']} | "
                  f"{_cell(s['detail'] or '')} |" for s in plan["steps"]]
    else:
        lines.append("No step: nothing of the run needed undoing.")
    for item in plan["irreversible"]:
        lines.append(f"- irreversible: {item['method']} `{item['path']}`: {item['reason']}")
    if report["differences"]:
        lines += ["", "## Differences from the initial state", ""]
        lines += [f"- `{d['id']}`: {d['change']}"
                  + (f" ({', '.join(d['fields'])})" if d.get("fields") else "")
                  for d in report["differences"]]
    return "\n".join(lines) + "\n"


def summary(report: dict[str, Any], paths: tuple[Path, Path] | None = None) -> str:
    """The few lines printed at the end."""
    t, c = report["timings_ms"], report["counts"]
    lines = [f"gateway drill: {report['verdict']} (stop by {report['options']['stop']}, "
             f"up to {report['options']['writes']} bad writes)"]
    lines += [f"  {name:<8}{_ms(t[name]):>9} ms  {what}" for name, what in PHASES[:3]]
    lines.append(f"  writes: {c['writes_sent']} sent, {c['writes_through']} through, "
                 f"{c['writes_stopped']} stopped (423); journaled {c['journaled']}, "
                 f"undone {c['undone']}, lost {c['changes_lost']}")
    lines.append(f"  final state equals initial: {'yes' if report['final_equals_initial'] else 'NO'}"
                 f"; audit chain: {'ok' if report['audit'].get('ok') else 'BROKEN'} "
                 f"({report['audit'].get('count')} records)")
    lines += [f"  FAILED: {x['check']} ({x['detail']})" for x in report["checks"] if not x["ok"]]
    if paths:
        lines.append(f"  report: {paths[0]} and {paths[1].name}")
    return "\n".join(lines)
