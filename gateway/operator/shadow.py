"""``gateway shadow list|promote``: the writes a shadow run proposed, and making them held calls."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.operator.args import TIME_HELP, common_flags, moment, nonempty, positive_int
from gateway.operator.client import AdminClient
from gateway.operator.tables import items, json_value, print_json, request_line, table, when


def register(commands: Any) -> None:
    common = common_flags()
    shadow = commands.add_parser("shadow", help="writes proposed by shadow runs (mode: shadow)")
    shadow_commands = shadow.add_subparsers(dest="shadow_command", required=True)
    list_ = shadow_commands.add_parser("list", parents=[common],
                                       help="shadowed writes with what each would change")
    list_.add_argument("--agent", help="only writes of this agent")
    list_.add_argument("--run", help="only writes of this agent run (X-Agent-Run)")
    list_.add_argument("--upstream", help="only writes to this upstream")
    list_.add_argument("--since", type=moment, help=f"only writes at or after: {TIME_HELP}")
    list_.add_argument("--limit", type=positive_int, help="at most this many")
    list_.set_defaults(operator_handler=cmd_list)
    promote = shadow_commands.add_parser(
        "promote", parents=[common],
        help="turn shadowed writes into held calls (then approve them as usual)")
    promote.add_argument("ids", nargs="+", type=nonempty, metavar="ID",
                         help="journal entry ids of shadowed writes")
    promote.set_defaults(operator_handler=cmd_promote)


def changes(item: dict[str, Any]) -> str:
    found = item.get("changes") or []
    return ", ".join(f"{c.get('field')}: {json_value(c.get('before'))} -> "
                     f"{json_value(c.get('after'))}" for c in found if isinstance(c, dict)) or "-"


def cmd_list(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/shadow", params={
        "agent": args.agent, "run": args.run, "upstream": args.upstream, "since": args.since,
        "limit": args.limit})
    if args.json:
        print_json(data)
        return 0
    found = items(data)
    if not found:
        print("no shadowed writes")
        return 0
    print(table(("ID", "AT", "AGENT", "RUN", "UPSTREAM", "REQUEST", "RULE", "WOULD", "PROPOSAL",
                 "CHANGES"),
                [(i.get("id"), when(i.get("at")), i.get("agent"), i.get("run"),
                  i.get("upstream"), request_line(i), i.get("rule"), i.get("would_decide"),
                  (i.get("proposal") or {}).get("status"), changes(i)) for i in found]))
    return 0


def cmd_promote(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("POST", "/v1/shadow/promote", body={"entries": args.ids})
    if args.json:
        print_json(data)
        return 0
    held = items(data)
    print(table(("APPROVAL", "STATUS", "AGENT", "UPSTREAM", "REQUEST", "RULE", "DIGEST"),
                [(i.get("id"), i.get("status"), i.get("agent"), i.get("upstream"),
                  request_line(i), i.get("rule"), i.get("digest")) for i in held]))
    print("approve each with: gateway approvals approve ID (it runs once)")
    return 0
