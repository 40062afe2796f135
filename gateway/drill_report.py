"""The drill's report: ``drill-<timestamp>.json``, ``drill-<timestamp>.md`` and a summary.

The report is the plain dict ``gateway.drill.run_drill`` returns; this module
only renders and saves it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
          ("rollback_steps", "rollback steps"),
          ("undone", "undone (applied)"),
          ("conflicts", "conflicts"),
          ("failed", "failed"),
          ("irreversible", "irreversible"),
          ("changes_lost", "changes lost"),
          ("customers_initial", "customers before"),
          ("customers_final", "customers after"))


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
        lines += ["| # | method | path | status | detail |", "| ---: | --- | --- | --- | --- |"]
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
