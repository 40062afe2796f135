"""``gateway report``: the autonomy report, per rule and agent, with its suggestions."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.operator.args import TIME_HELP, common_flags, moment
from gateway.operator.client import AdminClient
from gateway.operator.tables import clean, dicts, print_json, table, when

DECISIONS = ("allow", "deny", "hold", "delay", "shadow", "frozen", "error")


def register(commands: Any) -> None:
    report = commands.add_parser(
        "report", parents=[common_flags()],
        help="the autonomy report: decisions, overrides, rollbacks and advice per rule")
    report.add_argument("--since", type=moment, help=f"window start (default 30 days before "
                                                     f"--until): {TIME_HELP}")
    report.add_argument("--until", type=moment, help=f"window end (default now): {TIME_HELP}")
    report.add_argument("--upstream", help="only this upstream")
    report.set_defaults(operator_handler=cmd_report)


def calls(row: dict[str, Any]) -> str:
    counted = row.get("calls") or {}
    parts = [f"{d} {counted[d]}" for d in DECISIONS if counted.get(d)]
    would = row.get("would_decide") or {}
    if would:
        parts.append("would " + ", ".join(f"{d} {n}" for d, n in sorted(would.items())))
    return "; ".join(parts) or "-"


def held(row: dict[str, Any]) -> str:
    h, d = row.get("held") or {}, row.get("delayed") or {}
    parts = []
    if any(h.values()):
        parts.append(f"{h.get('approved', 0)} approved, {h.get('rejected', 0)} rejected, "
                     f"{h.get('expired', 0)} expired" + (f", {h['pending']} pending"
                                                         if h.get("pending") else ""))
    if any(d.values()):
        parts.append(f"delayed: {d.get('ran', 0)} ran, {d.get('cancelled', 0)} cancelled"
                     + (f", {d['pending']} pending" if d.get("pending") else ""))
    return "; ".join(parts) or "-"


def rate(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def seconds(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}s" if value < 600 else f"{value / 60:.0f}m"


def drill_line(drill: Any) -> str:
    if not isinstance(drill, dict):
        return "last drill: none recorded (gateway drill --record)"
    timings = ", ".join(f"{p} {drill[p + '_ms']:.0f} ms" for p in ("detect", "stop", "restore")
                        if isinstance(drill.get(p + "_ms"), (int, float)))
    return clean(f"last drill: {drill.get('verdict')} at {when(drill.get('finished_at'))}"
                 + (f": {timings}" if timings else ""))


def cmd_report(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/report/autonomy", params={
        "since": args.since, "until": args.until, "upstream": args.upstream})
    if args.json:
        print_json(data)
        return 0
    print(clean(f"autonomy report {when(data.get('since'))} to {when(data.get('until'))} "
                f"({data.get('window')})"))
    rows = dicts(data.get("rows"))
    if rows:
        print(table(("UPSTREAM", "RULE", "AGENT", "ACTION", "MODE", "CALLS", "HELD", "OVERRIDE",
                     "ROLLED BACK", "MEDIAN DECIDE"),
                    [(r.get("upstream"), r.get("rule") or "(default)", r.get("agent"),
                      r.get("action"), r.get("mode"), calls(r), held(r),
                      rate(r.get("override_rate")), r.get("rolled_back"),
                      seconds(r.get("median_seconds_to_decide"))) for r in rows]))
    else:
        print("no decisions on writes in this window")
    print(drill_line(data.get("drill")))
    advice = dicts(data.get("suggestions"))
    if advice:
        print("suggestions (advice only: nothing is changed):")
        for item in advice:
            print(clean(f"  - {item.get('text')}"))
    return 0
