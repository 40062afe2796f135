"""``gateway approvals list|show|approve|reject``: held calls waiting for an operator."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from gateway.errors import OperatorError
from gateway.operator.args import common_flags, nonempty, positive_int
from gateway.operator.client import AdminClient
from gateway.operator.tables import (
    clean,
    fields,
    indented,
    items,
    json_value,
    print_json,
    request_line,
    table,
    text,
    when,
)

STATUSES = ("pending", "approved", "executed", "failed", "rejected", "expired", "unknown")


def register(commands: Any) -> None:
    common = common_flags()
    approvals = commands.add_parser("approvals", help="held calls waiting for an operator")
    approval_commands = approvals.add_subparsers(dest="approvals_command", required=True)
    list_ = approval_commands.add_parser("list", parents=[common], help="list held calls")
    list_.add_argument("--status", choices=STATUSES, help="only calls in this status")
    list_.add_argument("--agent", help="only calls of this agent")
    list_.add_argument("--upstream", help="only calls to this upstream")
    list_.add_argument("--limit", type=positive_int, help="at most this many calls")
    list_.set_defaults(operator_handler=cmd_list)
    show = approval_commands.add_parser("show", parents=[common],
                                        help="one held call and what it would change")
    show.add_argument("id", type=nonempty)
    show.set_defaults(operator_handler=cmd_show)
    approve = approval_commands.add_parser("approve", parents=[common],
                                           help="approve a held call (it is executed once)")
    approve.add_argument("id", type=nonempty)
    approve.add_argument("--comment", help="recorded with the approval")
    approve.add_argument("--digest", help="approve only if the call still has this digest "
                                          "(as printed by `approvals show`)")
    approve.set_defaults(operator_handler=cmd_approve)
    reject = approval_commands.add_parser("reject", parents=[common],
                                          help="reject a held call (it is never forwarded)")
    reject.add_argument("id", type=nonempty)
    reject.add_argument("--reason", help="recorded with the rejection")
    reject.set_defaults(operator_handler=cmd_reject)


def _path(approval_id: str, action: str = "") -> str:
    path = f"/v1/approvals/{quote(approval_id, safe='')}"
    return f"{path}/{action}" if action else path


def _count(item: dict[str, Any]) -> str:
    approvals = item.get("approvals") or []
    required = item.get("required_approvals")
    return f"{len(approvals)}/{required}" if required is not None else str(len(approvals))


def cmd_list(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/approvals", params={
        "status": args.status, "agent": args.agent, "upstream": args.upstream, "limit": args.limit})
    if args.json:
        print_json(data)
        return 0
    calls = items(data)
    if not calls:
        print("no held calls" + (f" with status {args.status}" if args.status else ""))
        return 0
    print(table(("ID", "STATUS", "AT", "AGENT", "UPSTREAM", "REQUEST", "RULE", "APPROVALS", "EXPIRES"),
                [(i.get("id"), i.get("status"), when(i.get("at")), i.get("agent"), i.get("upstream"),
                  request_line(i), i.get("rule"), _count(i), when(i.get("expires_at")))
                 for i in calls]))
    return 0


def cmd_show(client: AdminClient, args: argparse.Namespace) -> int:
    call = client.call("GET", _path(args.id))
    if args.json:
        print_json(call)
        return 0
    if not isinstance(call, dict):
        raise OperatorError(1, "error: bad_response: the approval is not a JSON object")
    pairs: list[tuple[str, Any]] = [
        ("id", call.get("id")), ("status", call.get("status")), ("at", call.get("at")),
        ("agent", call.get("agent")), ("upstream", call.get("upstream")),
        ("request", request_line(call)), ("rule", call.get("rule")),
        ("approvals", _count(call)), ("expires at", call.get("expires_at"))]
    for key, label in (("decided_by", "decided by"), ("decided_at", "decided at"),
                       ("reason", "reason"), ("error", "error"), ("capture_error", "capture error")):
        if call.get(key) is not None:
            pairs.append((label, call[key]))
    pairs.append(("digest", call.get("digest")))
    lines = fields(pairs)
    for approval in call.get("approvals") or []:
        if isinstance(approval, dict):
            comment = f": {approval['comment']}" if approval.get("comment") else ""
            lines.append(clean(f"  - {text(approval.get('by'))} ({text(approval.get('role'))}) "
                               f"at {text(approval.get('at'))}{comment}"))
    if call.get("body") is not None:
        lines += ["body:", *indented(call["body"])]
    response = call.get("response")
    if isinstance(response, dict):
        lines.append(f"response: {text(response.get('status'))}")
        if response.get("body") is not None:
            lines += indented(response["body"])
    changes = [c for c in call.get("changes") or [] if isinstance(c, dict)]
    if changes:
        lines += ["", "changes:",
                  table(("FIELD", "BEFORE", "", "AFTER"),
                        [(c.get("field"), json_value(c.get("before")), "->", json_value(c.get("after")))
                         for c in changes])]
    elif call.get("current") is None and call.get("capture_error"):
        lines += ["", "changes: unknown (the current state could not be read)"]
    else:
        lines += ["", "changes: none"]
    print("\n".join(lines))
    return 0


def cmd_approve(client: AdminClient, args: argparse.Namespace) -> int:
    body = {k: v for k, v in (("comment", args.comment), ("digest", args.digest)) if v is not None}
    return _print_decision(client.call("POST", _path(args.id, "approve"), body=body), args)


def cmd_reject(client: AdminClient, args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason is not None else {}
    return _print_decision(client.call("POST", _path(args.id, "reject"), body=body), args)


def _print_decision(data: Any, args: argparse.Namespace) -> int:
    if args.json:
        print_json(data)
        return 0
    data = data if isinstance(data, dict) else {}
    line = f"approval {text(data.get('id', args.id))}: {text(data.get('status'))}"
    if data.get("status") == "pending" and data.get("required_approvals") is not None:
        line += f" ({_count(data)} approvals)"
    print(clean(line))
    response = data.get("response")
    if isinstance(response, dict):
        print(f"upstream response: {text(response.get('status'))}")
    if data.get("error"):
        print(f"error: {text(data['error'])}")
    return 0
