"""``gateway rollback``: plan (and apply) compensations of journaled writes; show, list, resume plans."""

from __future__ import annotations

import argparse
import shlex
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx

from gateway.errors import OperatorError
from gateway.operator.args import TIME_HELP, common_flags, moment, nonempty, positive_int
from gateway.operator.client import AdminClient
from gateway.operator.tables import clean, dicts, fields, items, plural, print_json, table, text, when

EXIT_UNFINISHED = 3
# applying sends one read and one compensation per step, all within one admin call
APPLY_TIMEOUT = httpx.Timeout(900.0, connect=5.0)
SELECTION = ("entries", "agent", "run", "upstream", "since", "until")

DESCRIPTION = """\
Undo what agents wrote: the gateway sends each journaled write's compensation,
newest first. Without a sub-command it plans a rollback of the calls you select;
that is a dry run (nothing is sent) unless you add --apply. A resource changed
since the agent's write is a conflict and is left alone unless --force.

  gateway rollback --run run-7              # dry run: what would be undone
  gateway rollback --run run-7 --apply      # undo it
  gateway rollback list                     # recent plans
  gateway rollback show PLAN_ID
  gateway rollback resume PLAN_ID           # continue a plan that stopped part-way
"""
USAGE = """\
%(prog)s [--entries ID ...] [--agent A] [--run R] [--upstream U]
                        [--since T] [--until T] [--apply] [--force] [--json]
       %(prog)s {list [--limit N] | show PLAN_ID | resume PLAN_ID} [--json]"""
EPILOG = """\
exit status:
  0  the plan is done, or a dry run found nothing in the way
  1  the admin API answered with an error
  2  usage error, or the admin API is unreachable
  3  the plan has conflicts, failed steps or irreversible entries (nothing of
     those was undone: look at them before calling it done)
"""


def register(commands: Any) -> None:
    rollback = commands.add_parser(
        "rollback", parents=[common_flags()], help="undo agents' writes (dry run unless --apply)",
        usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    rollback.add_argument("--entries", nargs="+", action="extend", metavar="ID",
                          help="these journal entries (IDs as `gateway journal` prints them)")
    rollback.add_argument("--agent", help="writes of this agent")
    rollback.add_argument("--run", help="writes of this agent run (X-Agent-Run)")
    rollback.add_argument("--upstream", help="writes to this upstream")
    rollback.add_argument("--since", type=moment, help=f"writes at or after this time: {TIME_HELP}")
    rollback.add_argument("--until", type=moment, help=f"writes before this time: {TIME_HELP}")
    rollback.add_argument("--apply", action="store_true",
                          help="send the compensations (default: a dry run that changes nothing)")
    rollback.add_argument("--force", action="store_true",
                          help="also overwrite resources changed since the agent's write")
    rollback.set_defaults(operator_handler=cmd_rollback, operator_check=partial(_check, rollback))

    inherited = common_flags(inherit=True)
    plans = rollback.add_subparsers(dest="rollback_command", metavar="{list,show,resume}",
                                    title="plans")
    list_ = plans.add_parser("list", parents=[inherited], help="recent rollback plans, newest first")
    list_.add_argument("--limit", type=positive_int, help="at most this many plans")
    list_.set_defaults(operator_handler=cmd_list)
    show = plans.add_parser("show", parents=[inherited], help="one rollback plan and its steps")
    show.add_argument("id", type=nonempty)
    show.set_defaults(operator_handler=cmd_show)
    resume = plans.add_parser("resume", parents=[inherited],
                              help="continue a plan that stopped part-way (its steps still planned "
                                   "or applying; conflicts and failures stay)")
    resume.add_argument("id", type=nonempty)
    resume.set_defaults(operator_handler=cmd_resume)


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SELECTION if getattr(args, name) is not None}


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Before any call: the flags belong to a new plan, and a new plan needs a selection."""
    if args.rollback_command:
        given = [f"--{name}" for name in (*_selection(args), "apply", "force")
                 if getattr(args, name) not in (None, False)]
        if given:
            parser.error(f"`rollback {args.rollback_command}` takes no {', '.join(given)} "
                         "(those plan a new rollback)")
    elif not _selection(args):
        parser.error("name what to roll back: --entries, --agent, --run, --upstream, --since "
                     "or --until")


def _plan_path(plan_id: str, action: str = "") -> str:
    path = f"/v1/rollback/{quote(plan_id, safe='')}"
    return f"{path}/{action}" if action else path


def cmd_rollback(client: AdminClient, args: argparse.Namespace) -> int:
    body = {**_selection(args), "dry_run": not args.apply, "force": args.force}
    data = client.call("POST", "/v1/rollback", body=body, timeout=APPLY_TIMEOUT)
    return _report(data, args)


def cmd_show(client: AdminClient, args: argparse.Namespace) -> int:
    return _report(client.call("GET", _plan_path(args.id)), args)


def cmd_resume(client: AdminClient, args: argparse.Namespace) -> int:
    return _report(client.call("POST", _plan_path(args.id, "resume"), timeout=APPLY_TIMEOUT), args)


def cmd_list(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/rollback", params={"limit": args.limit})
    if args.json:
        print_json(data)
        return 0
    plans = items(data)
    if not plans:
        print("no rollback plans")
        return 0
    print(table(("ID", "CREATED", "BY", "STATUS", "STEPS", "CONFLICTS", "IRREVERSIBLE", "SELECTOR"),
                [(p.get("id"), when(p.get("created_at")), p.get("by"), p.get("status"),
                  len(dicts(p.get("steps"))), len(dicts(p.get("conflicts"))),
                  len(dicts(p.get("irreversible"))), _selector_text(p.get("selector")))
                 for p in plans]))
    return 0


def _report(data: Any, args: argparse.Namespace) -> int:
    plan = data.get("plan") if isinstance(data, dict) else None
    if not isinstance(plan, dict):
        raise OperatorError(1, "error: bad_response: the answer has no rollback plan")
    if args.json:
        print_json(data)
    else:
        print("\n".join(_plan_lines(plan, args)))
    return EXIT_UNFINISHED if _unfinished(plan) else 0


def _progress(plan: dict[str, Any]) -> list[tuple[str, Any]]:
    """``progress  2/3 steps`` while a plan runs (shown by ``show`` and ``resume``)."""
    progress = plan.get("progress")
    if not isinstance(progress, dict) or plan.get("status") == "dry_run":
        return []
    return [("progress", f"{progress.get('done')}/{progress.get('steps')} steps")]


def _unfinished(plan: dict[str, Any]) -> bool:
    """Whether anything selected was not (or, in a dry run, would not be) undone."""
    steps = dicts(plan.get("steps"))
    return (plan.get("status") == "incomplete" or bool(dicts(plan.get("conflicts")))
            or bool(dicts(plan.get("irreversible")))
            or any(s.get("status") in ("conflict", "failed") for s in steps))


def _plan_lines(plan: dict[str, Any], args: argparse.Namespace) -> list[str]:
    dry_run = plan.get("status") == "dry_run"
    steps = dicts(plan.get("steps"))
    irreversible = dicts(plan.get("irreversible"))
    conflicts = dicts(plan.get("conflicts")) or [s for s in steps if s.get("status") == "conflict"]
    failed = [s for s in steps if s.get("status") == "failed"]
    lines = ["DRY RUN: nothing was sent; this is what the rollback would do", ""] if dry_run else []
    lines += fields([("plan", plan.get("id")), ("status", plan.get("status")),
                     *_progress(plan),
                     ("created", when(plan.get("created_at"))), ("by", plan.get("by")),
                     ("selector", _selector_text(plan.get("selector"))), ("force", plan.get("force"))])
    lines.append("")
    if steps:
        lines += [f"steps ({len(steps)}, newest write first):",
                  table(("SEQ", "ENTRY", "UPSTREAM", "METHOD", "PATH", "STATUS", "DETAIL"),
                        [(s.get("seq"), s.get("entry"), s.get("upstream"), s.get("method"),
                          s.get("path"), s.get("status"), s.get("detail")) for s in steps])]
    else:
        lines.append("steps: none (nothing selected can be undone by the gateway)")
    if irreversible:
        lines += ["", f"irreversible ({len(irreversible)}, not undone: handle these by hand):",
                  table(("ENTRY", "UPSTREAM", "METHOD", "PATH", "REASON"),
                        [(i.get("entry"), i.get("upstream"), i.get("method"), i.get("path"),
                          i.get("reason")) for i in irreversible])]
    lines += ["", _conflict_summary(conflicts, dry_run)]
    if failed:
        lines.append(f"failed: {plural(len(failed), 'step')} (seq "
                     f"{', '.join(text(s.get('seq')) for s in failed)})")
    if dry_run:
        lines += ["", "to apply: " + _command(plan.get("selector"), args,
                                              force=bool(plan.get("force")), apply=True)]
    elif failed or conflicts:  # a plan's conflicts and failures are final: plan them anew
        entries = [s.get("entry") for s in [*conflicts, *failed] if s.get("entry")]
        lines += ["", "to plan those again: " + _command({"entries": entries}, args)]
    return lines


def _conflict_summary(conflicts: list[dict[str, Any]], dry_run: bool) -> str:
    if not conflicts:
        return "conflicts: none"
    seqs = ", ".join(text(s.get("seq")) for s in conflicts)
    left = "would be left alone" if dry_run else "left alone"
    return (f"conflicts: {plural(len(conflicts), 'step')} (seq {seqs}) changed since the agent's "
            f"write, {left}; --force overwrites them")


def _selector_text(selector: Any) -> str:
    if not isinstance(selector, dict):
        return text(selector)
    parts = [f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
             for key, value in selector.items() if value not in (None, [], "")]
    return clean(" ".join(parts)) or "-"


def _command(selection: Any, args: argparse.Namespace, *, force: bool = False,
             apply: bool = False) -> str:
    """``gateway rollback SELECTION``, e.g. from a plan's selector (durations already resolved)."""
    if not isinstance(selection, dict) or not any(selection.values()):
        selection = _selection(args)
    words = ["gateway", "rollback"]
    if args.admin_url:
        words += ["--admin-url", args.admin_url]
    for name in SELECTION:
        value = selection.get(name)
        if isinstance(value, list) and value:
            words += [f"--{name}", *map(str, value)]
        elif value not in (None, [], ""):
            words += [f"--{name}", str(value)]
    words += ["--force"] * force + ["--apply"] * apply
    return clean(shlex.join(words))
