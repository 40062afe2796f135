"""Operator commands of ``gateway``: approvals, killswitch, journal.

They talk to the admin REST API (see the contract) with the operator token
from ``GATEWAY_TOKEN`` and the admin URL from ``--admin-url``, else
``GATEWAY_ADMIN_URL``, else http://127.0.0.1:8081. Output is a readable table,
or with ``--json`` the API's JSON. Exit codes: 0 ok, 1 the API answered with an
error (printed as ``error: CODE: MESSAGE``), 2 usage error or admin API
unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"
TOKEN_ENV = "GATEWAY_TOKEN"
ADMIN_URL_ENV = "GATEWAY_ADMIN_URL"
APPROVAL_STATUSES = ("pending", "approved", "executed", "failed", "rejected", "expired", "unknown")
COMMANDS = ("approvals", "killswitch", "journal")
# an approve executes the held call (capture + forward), so allow the upstream time to answer
TIMEOUT = httpx.Timeout(60.0, connect=5.0)

Handler = Callable[["AdminClient", argparse.Namespace], int]


class OperatorError(Exception):
    """Ends the command with ``exit_code`` after printing ``message`` to stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code, self.message = exit_code, message


# -- argument parsing -------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _since(text: str) -> str:
    """``15m``, ``2h``, ``1d`` mean that long ago; anything else goes as is (ISO-8601)."""
    match = _DURATION.match(text.strip())
    if match is None:
        return text
    delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    return (datetime.now(UTC) - delta).isoformat(timespec="seconds").replace("+00:00", "Z")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin-url",
                        help=f"admin API base URL (default: ${ADMIN_URL_ENV} or {DEFAULT_ADMIN_URL})")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    return common


def add_operator_commands(commands: Any) -> None:
    """Register ``approvals``, ``killswitch`` and ``journal`` on the ``gateway`` subparsers."""
    common = _common()

    approvals = commands.add_parser("approvals", help="held calls waiting for an operator")
    approval_commands = approvals.add_subparsers(dest="approvals_command", required=True)
    list_ = approval_commands.add_parser("list", parents=[common], help="list held calls")
    list_.add_argument("--status", choices=APPROVAL_STATUSES, help="only calls in this status")
    list_.add_argument("--agent", help="only calls of this agent")
    list_.add_argument("--upstream", help="only calls to this upstream")
    list_.add_argument("--limit", type=_positive_int, help="at most this many calls")
    list_.set_defaults(operator_handler=cmd_approvals_list)
    show = approval_commands.add_parser("show", parents=[common],
                                        help="one held call and what it would change")
    show.add_argument("id", type=_nonempty)
    show.set_defaults(operator_handler=cmd_approvals_show)
    approve = approval_commands.add_parser("approve", parents=[common],
                                           help="approve a held call (it is executed once)")
    approve.add_argument("id", type=_nonempty)
    approve.add_argument("--comment", help="recorded with the approval")
    approve.add_argument("--digest", help="approve only if the call still has this digest "
                                          "(as printed by `approvals show`)")
    approve.set_defaults(operator_handler=cmd_approvals_approve)
    reject = approval_commands.add_parser("reject", parents=[common],
                                          help="reject a held call (it is never forwarded)")
    reject.add_argument("id", type=_nonempty)
    reject.add_argument("--reason", help="recorded with the rejection")
    reject.set_defaults(operator_handler=cmd_approvals_reject)

    killswitch = commands.add_parser("killswitch", help="freeze or unfreeze writes")
    killswitch_commands = killswitch.add_subparsers(dest="killswitch_command", required=True)
    status = killswitch_commands.add_parser("status", parents=[common], help="active freezes")
    status.set_defaults(operator_handler=cmd_killswitch_status)
    for name, handler, help_ in (
            ("engage", cmd_killswitch_engage, "freeze writes (globally, or of one upstream or agent)"),
            ("release", cmd_killswitch_release, "lift a freeze")):
        sub = killswitch_commands.add_parser(name, parents=[common], help=help_)
        sub.add_argument("--reason", required=True, type=_nonempty, help="recorded in the audit log")
        scope = sub.add_mutually_exclusive_group()
        scope.add_argument("--upstream", help="only this upstream (default: global)")
        scope.add_argument("--agent", help="only this agent (default: global)")
        sub.set_defaults(operator_handler=handler)

    journal = commands.add_parser("journal", parents=[common], help="recent calls, newest first")
    journal.add_argument("--agent", help="only calls of this agent")
    journal.add_argument("--upstream", help="only calls to this upstream")
    journal.add_argument("--run", help="only calls of this agent run (X-Agent-Run)")
    journal.add_argument("--since", type=_since,
                         help="only calls at or after this time: ISO-8601, or 30s, 15m, 2h, 1d ago")
    journal.add_argument("--limit", type=_positive_int, help="at most this many entries")
    journal.set_defaults(operator_handler=cmd_journal)


# -- the admin API ------------------------------------------------------------------------------

def _admin_url(args: argparse.Namespace) -> str:
    url = (args.admin_url or os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OperatorError(2, f"gateway: invalid admin URL {url!r} (expected http://HOST:PORT)")
    return url


def _token() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise OperatorError(2, f"gateway: {TOKEN_ENV} is not set; export an operator token "
                               f"(one whose sha256 is in the settings' operators) as {TOKEN_ENV}")
    return token


class AdminClient:
    """Synchronous calls to the admin API; failures become ``OperatorError``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=TIMEOUT,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Accept": "application/json"})

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, path, params=params, json=body)
        except httpx.TimeoutException:
            hint = "" if method == "GET" else "; the outcome is unknown, check before retrying"
            raise OperatorError(2, f"gateway: the admin API at {self.url} did not answer "
                                   f"{method} {path} in time{hint}") from None
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise OperatorError(2, f"gateway: cannot reach the admin API at {self.url}: "
                                   f"{exc or type(exc).__name__} (is `gateway serve` running? "
                                   f"set --admin-url or {ADMIN_URL_ENV})") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_error:
            raise OperatorError(1, _api_error(response, data))
        if data is None:
            raise OperatorError(1, f"error: bad_response: {method} {self.url}{path} answered "
                                   f"{response.status_code} without JSON; is this the admin listener?")
        return data


def _api_error(response: httpx.Response, data: Any) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and "code" in error:
        return _clean(f"error: {error['code']}: {error.get('message', '')}")
    text = response.text.strip()[:200] or response.reason_phrase
    return _clean(f"error: http_{response.status_code}: {text}")


# -- rendering ----------------------------------------------------------------------------------

def _clean(text: str) -> str:
    """Escape control characters: agents and upstreams choose much of what is printed."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return _clean(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return _clean(str(value))


def _json_value(value: Any) -> str:
    return _clean(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _when(value: Any) -> str:
    """An ISO time to the second, for tables."""
    return re.sub(r"\.\d+", "", value) if isinstance(value, str) else _text(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns as wide as their widest cell, two spaces apart."""
    cells = [[_text(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [list(headers), *cells])


def _request_line(item: dict[str, Any]) -> str:
    query = item.get("query")
    if isinstance(query, dict):
        query = "&".join(f"{k}={v}" for k, v in query.items())
    target = f"{item.get('path') or ''}?{query}" if query else f"{item.get('path') or ''}"
    return f"{item.get('method') or '?'} {target}"


def _approval_count(item: dict[str, Any]) -> str:
    approvals = item.get("approvals") or []
    required = item.get("required_approvals")
    return f"{len(approvals)}/{required}" if required is not None else str(len(approvals))


def _fields(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    width = max(len(label) for label, _ in pairs) + 2
    return [f"{label + ':':<{width}}{_text(value)}" for label, value in pairs]


def _indented(value: Any, indent: str = "  ") -> list[str]:
    text = json.dumps(value, indent=2, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
    return [indent + _clean(line) for line in text.splitlines()]


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _items(data: Any) -> list[dict[str, Any]]:
    items = data.get("items") if isinstance(data, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


# -- commands -----------------------------------------------------------------------------------

def _approval_path(approval_id: str, action: str = "") -> str:
    path = f"/v1/approvals/{quote(approval_id, safe='')}"
    return f"{path}/{action}" if action else path


def cmd_approvals_list(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/approvals", params={
        "status": args.status, "agent": args.agent, "upstream": args.upstream, "limit": args.limit})
    if args.json:
        _print_json(data)
        return 0
    items = _items(data)
    if not items:
        print("no held calls" + (f" with status {args.status}" if args.status else ""))
        return 0
    print(table(("ID", "STATUS", "AT", "AGENT", "UPSTREAM", "REQUEST", "RULE", "APPROVALS", "EXPIRES"),
                [(i.get("id"), i.get("status"), _when(i.get("at")), i.get("agent"), i.get("upstream"),
                  _request_line(i), i.get("rule"), _approval_count(i), _when(i.get("expires_at")))
                 for i in items]))
    return 0


def cmd_approvals_show(client: AdminClient, args: argparse.Namespace) -> int:
    call = client.call("GET", _approval_path(args.id))
    if args.json:
        _print_json(call)
        return 0
    if not isinstance(call, dict):
        raise OperatorError(1, "error: bad_response: the approval is not a JSON object")
    pairs: list[tuple[str, Any]] = [
        ("id", call.get("id")), ("status", call.get("status")), ("at", call.get("at")),
        ("agent", call.get("agent")), ("upstream", call.get("upstream")),
        ("request", _request_line(call)), ("rule", call.get("rule")),
        ("approvals", _approval_count(call)), ("expires at", call.get("expires_at"))]
    for key, label in (("decided_by", "decided by"), ("decided_at", "decided at"),
                       ("reason", "reason"), ("error", "error"), ("capture_error", "capture error")):
        if call.get(key) is not None:
            pairs.append((label, call[key]))
    pairs.append(("digest", call.get("digest")))
    lines = _fields(pairs)
    for approval in call.get("approvals") or []:
        if isinstance(approval, dict):
            comment = f": {approval['comment']}" if approval.get("comment") else ""
            lines.append(_clean(f"  - {_text(approval.get('by'))} ({_text(approval.get('role'))}) "
                                f"at {_text(approval.get('at'))}{comment}"))
    if call.get("body") is not None:
        lines += ["body:", *_indented(call["body"])]
    response = call.get("response")
    if isinstance(response, dict):
        lines.append(f"response: {_text(response.get('status'))}")
        if response.get("body") is not None:
            lines += _indented(response["body"])
    changes = [c for c in call.get("changes") or [] if isinstance(c, dict)]
    if changes:
        lines += ["", "changes:",
                  table(("FIELD", "BEFORE", "", "AFTER"),
                        [(c.get("field"), _json_value(c.get("before")), "->", _json_value(c.get("after")))
                         for c in changes])]
    elif call.get("current") is None and call.get("capture_error"):
        lines += ["", "changes: unknown (the current state could not be read)"]
    else:
        lines += ["", "changes: none"]
    print("\n".join(lines))
    return 0


def cmd_approvals_approve(client: AdminClient, args: argparse.Namespace) -> int:
    body = {k: v for k, v in (("comment", args.comment), ("digest", args.digest)) if v is not None}
    return _print_decision(client.call("POST", _approval_path(args.id, "approve"), body=body), args)


def cmd_approvals_reject(client: AdminClient, args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason is not None else {}
    return _print_decision(client.call("POST", _approval_path(args.id, "reject"), body=body), args)


def _print_decision(data: Any, args: argparse.Namespace) -> int:
    if args.json:
        _print_json(data)
        return 0
    data = data if isinstance(data, dict) else {}
    line = f"approval {_text(data.get('id', args.id))}: {_text(data.get('status'))}"
    if data.get("status") == "pending" and data.get("required_approvals") is not None:
        line += f" ({_approval_count(data)} approvals)"
    print(_clean(line))
    response = data.get("response")
    if isinstance(response, dict):
        print(f"upstream response: {_text(response.get('status'))}")
    if data.get("error"):
        print(f"error: {_text(data['error'])}")
    return 0


def _print_killswitch(data: Any) -> None:
    data = data if isinstance(data, dict) else {}
    freezes = [f for f in data.get("freezes") or [] if isinstance(f, dict)]
    if not data.get("engaged"):
        print("kill switch: released (writes flow)")
        return
    print(f"kill switch: engaged ({len(freezes)} freeze{'s' if len(freezes) != 1 else ''})")
    if freezes:
        print(table(("SCOPE", "TARGET", "REASON", "BY", "AT"),
                    [(f.get("scope"), f.get("target"), f.get("reason"), f.get("by"), _when(f.get("at")))
                     for f in freezes]))


def cmd_killswitch_status(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/killswitch")
    if args.json:
        _print_json(data)
    else:
        _print_killswitch(data)
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


def cmd_killswitch_engage(client: AdminClient, args: argparse.Namespace) -> int:
    body, scope = _scope(args)
    data = client.call("POST", "/v1/killswitch/engage", body=body)
    if args.json:
        _print_json(data)
        return 0
    print(_clean(f"writes frozen: {scope}"))
    _print_killswitch(data)
    return 0


def cmd_killswitch_release(client: AdminClient, args: argparse.Namespace) -> int:
    body, scope = _scope(args)
    data = client.call("POST", "/v1/killswitch/release", body=body)
    if args.json:
        _print_json(data)
        return 0
    if isinstance(data, dict) and "released" in data and data["released"] is None:
        print(_clean(f"no freeze of {scope} was engaged"))
    else:
        print(_clean(f"freeze lifted: {scope}"))
    _print_killswitch(data)
    return 0


def cmd_journal(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/journal", params={
        "agent": args.agent, "upstream": args.upstream, "run": args.run, "since": args.since,
        "limit": args.limit})
    if args.json:
        _print_json(data)
        return 0
    items = _items(data)
    if not items:
        print("no journal entries")
        return 0
    print(table(("ID", "AT", "AGENT", "RUN", "UPSTREAM", "REQUEST", "RULE", "DECISION", "STATUS",
                 "REVERSIBLE"),
                [(i.get("id"), _when(i.get("at")), i.get("agent"), i.get("run"), i.get("upstream"),
                  _request_line(i), i.get("rule"), i.get("decision"), i.get("status"),
                  i.get("reversible")) for i in items]))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the operator command parsed into ``args``; returns the exit code."""
    handler: Handler = args.operator_handler
    try:
        client = AdminClient(_admin_url(args), _token())
        try:
            return handler(client, args)
        finally:
            client.close()
    except OperatorError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
