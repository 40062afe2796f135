"""``gateway journal``: recent calls, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.operator.args import TIME_HELP, common_flags, moment, positive_int
from gateway.operator.client import AdminClient
from gateway.operator.tables import items, print_json, request_line, table, when


def register(commands: Any) -> None:
    journal = commands.add_parser("journal", parents=[common_flags()], help="recent calls, newest first")
    journal.add_argument("--agent", help="only calls of this agent")
    journal.add_argument("--upstream", help="only calls to this upstream")
    journal.add_argument("--run", help="only calls of this agent run (X-Agent-Run)")
    journal.add_argument("--since", type=moment, help=f"only calls at or after this time: {TIME_HELP}")
    journal.add_argument("--limit", type=positive_int, help="at most this many entries")
    journal.set_defaults(operator_handler=cmd_journal)


def cmd_journal(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/journal", params={
        "agent": args.agent, "upstream": args.upstream, "run": args.run, "since": args.since,
        "limit": args.limit})
    if args.json:
        print_json(data)
        return 0
    entries = items(data)
    if not entries:
        print("no journal entries")
        return 0
    print(table(("ID", "AT", "AGENT", "RUN", "UPSTREAM", "REQUEST", "RULE", "DECISION", "STATUS",
                 "REVERSIBLE"),
                [(i.get("id"), when(i.get("at")), i.get("agent"), i.get("run"), i.get("upstream"),
                  request_line(i), i.get("rule"), i.get("decision"), i.get("status"),
                  i.get("reversible")) for i in entries]))
    return 0
