"""``gateway killswitch status|engage|release``: freeze or unfreeze writes."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.operator.args import common_flags, nonempty
from gateway.operator.client import AdminClient
from gateway.operator.tables import clean, print_json, table, when


def register(commands: Any) -> None:
    common = common_flags()
    killswitch = commands.add_parser("killswitch", help="freeze or unfreeze writes")
    killswitch_commands = killswitch.add_subparsers(dest="killswitch_command", required=True)
    status = killswitch_commands.add_parser("status", parents=[common], help="active freezes")
    status.set_defaults(operator_handler=cmd_status)
    for name, handler, help_ in (
            ("engage", cmd_engage, "freeze writes (globally, or of one upstream or agent)"),
            ("release", cmd_release, "lift a freeze")):
        sub = killswitch_commands.add_parser(name, parents=[common], help=help_)
        sub.add_argument("--reason", required=True, type=nonempty, help="recorded in the audit log")
        scope = sub.add_mutually_exclusive_group()
        scope.add_argument("--upstream", help="only this upstream (default: global)")
        scope.add_argument("--agent", help="only this agent (default: global)")
        sub.set_defaults(operator_handler=handler)


def _print_state(data: Any) -> None:
    data = data if isinstance(data, dict) else {}
    freezes = [f for f in data.get("freezes") or [] if isinstance(f, dict)]
    if not data.get("engaged"):
        print("kill switch: released (writes flow)")
        return
    print(f"kill switch: engaged ({len(freezes)} freeze{'s' if len(freezes) != 1 else ''})")
    if freezes:
        print(table(("SCOPE", "TARGET", "REASON", "BY", "AT"),
                    [(f.get("scope"), f.get("target"), f.get("reason"), f.get("by"), when(f.get("at")))
                     for f in freezes]))


def cmd_status(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/killswitch")
    if args.json:
        print_json(data)
    else:
        _print_state(data)
    return 0


def _scope(args: argparse.Namespace) -> tuple[dict[str, str], str]:
    body = {"reason": args.reason}
    if args.upstream is not None:
        body["upstream"] = args.upstream
        return body, f"upstream {args.upstream}"
    if args.agent is not None:
        body["agent"] = args.agent
        return body, f"agent {args.agent}"
    return body, "all upstreams and agents"


def cmd_engage(client: AdminClient, args: argparse.Namespace) -> int:
    body, scope = _scope(args)
    data = client.call("POST", "/v1/killswitch/engage", body=body)
    if args.json:
        print_json(data)
        return 0
    print(clean(f"writes frozen: {scope}"))
    for write in data.get("in_flight") or []:  # cut off after engage_wait: may have landed
        print(clean(f"  in flight, outcome unknown: {write.get('method')} "
                    f"{write.get('upstream')}{write.get('path')} by {write.get('agent')} "
                    f"(journal {write.get('id')})"))
    _print_state(data)
    return 0


def cmd_release(client: AdminClient, args: argparse.Namespace) -> int:
    body, scope = _scope(args)
    data = client.call("POST", "/v1/killswitch/release", body=body)
    if args.json:
        print_json(data)
        return 0
    if isinstance(data, dict) and "released" in data and data["released"] is None:
        print(clean(f"no freeze of {scope} was engaged"))
    else:
        print(clean(f"freeze lifted: {scope}"))
    _print_state(data)
    return 0
