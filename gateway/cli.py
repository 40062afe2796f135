"""The ``gateway`` command: run the gateway, check policies, and operate it.

Flags map one to one onto ``Settings`` fields; see ``gateway --help``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gateway.errors import PolicyError, SettingsError, StartupError
from gateway.operator.args import positive_int
from gateway.settings import (
    AgentSpec,
    Settings,
    dev_operator_token,
    load_settings,
    read_settings_file,
    sha256_hex,
)

DEMO_AGENT_KEY = "demo-agent-key"


DESCRIPTION = """\
An HTTP gateway between AI agents and the APIs they change: permission tiers,
a change journal with prior state, approvals, a kill switch, rollback, audit.

run it:
  serve        run the proxy (agents) and admin (operators) listeners
  demo         the same, in front of a bundled demo CRM, with a fresh store
  drill        rehearse an incident: stop a runaway agent, roll back, check
set it up:
  policy       check a policy directory (gateway policy check DIR), or explain it
               (gateway policy explain DIR: tier, capture, undo, reversibility per rule),
               or write one from an API description (gateway policy init --openapi SPEC)
  hash         the sha256 of an agent key or operator token, for the settings
operate it (talks to the admin listener with GATEWAY_TOKEN):
  approvals    held calls: list, show, approve, reject
  killswitch   freeze or release writes
  journal      what agents changed
  rollback     undo a run, an agent or a time window (dry run unless --apply)
  audit        verify or export the hash-chained audit log
  shadow       writes proposed by shadow runs; promote them to held calls
  report       the autonomy report: what the numbers say about each rule

`gateway COMMAND --help` tells more about each."""

# what a user typed, for errors about the value a flag gave (settings field -> flag)
FLAGS = {"policies_dir": "--policies", "proxy__host": "--host", "proxy__port": "--port",
         "admin__host": "--admin-host", "admin__port": "--admin-port",
         "database_url": "--database-url", "dev": "--dev", "workers": "--workers"}


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="settings file (YAML)")
    parser.add_argument("--policies", type=Path, dest="policies_dir", metavar="DIR",
                        help="policy directory (default ./policies)")
    parser.add_argument("--host", dest="proxy__host", metavar="HOST",
                        help="proxy listener host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, dest="proxy__port", metavar="PORT",
                        help="proxy listener port (default 8080; 0 picks a free one)")
    parser.add_argument("--admin-host", dest="admin__host", metavar="HOST",
                        help="admin listener host (default 127.0.0.1)")
    parser.add_argument("--admin-port", type=int, dest="admin__port", metavar="PORT",
                        help="admin listener port (default 8081)")
    parser.add_argument("--database-url", dest="database_url", metavar="URL",
                        help="sqlite+aiosqlite:///./gateway.db (default) or "
                             "postgresql+asyncpg://USER:PASSWORD@HOST/DB")
    parser.add_argument("--workers", type=positive_int, dest="workers", metavar="N",
                        help="processes serving the same ports (default 1); they share one "
                             "kill switch through the store")
    parser.add_argument("--dev", action="store_true", default=None,
                        help="local development: start without operators, print a one-time "
                             "admin token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the proxy and admin listeners")
    _serve_flags(serve)
    demo = commands.add_parser("demo", help="run the demo CRM API and the gateway in front of it")
    _serve_flags(demo)
    demo.add_argument("--crm-port", type=int, default=3000, metavar="PORT",
                      help="demo CRM API port")
    policy = commands.add_parser("policy", help="policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="validate every policy file of DIR")
    check.add_argument("dir", type=Path, metavar="DIR")
    explain = policy_commands.add_parser(
        "explain", help="print per rule: tier, capture, undo and reversibility")
    explain.add_argument("dir", type=Path, metavar="DIR")
    init = policy_commands.add_parser(
        "init", help="write a policy from an API's OpenAPI or Swagger description")
    init.add_argument("--openapi", type=Path, required=True, metavar="SPEC",
                      help="the description (OpenAPI 3.0/3.1 or Swagger 2.0, JSON or YAML)")
    init.add_argument("--upstream", required=True, metavar="NAME", help="the upstream's name")
    init.add_argument("--base-url", metavar="URL",
                      help="the API's URL (default: the description's first server)")
    init.add_argument("--out", type=Path, default=Path("./policies"), metavar="DIR",
                      help="where NAME.yaml goes (default ./policies)")
    init.add_argument("--json", action="store_true", help="print the summary as JSON")
    hash_ = commands.add_parser("hash", help="print the sha256 of a key or token for settings")
    hash_.add_argument("secret", nargs="?", help="the secret (prompted for when omitted)")
    drill = commands.add_parser("drill", help="rehearse an incident: a runaway agent is stopped, "
                                "its run rolled back, the state checked (exit 0 PASS, 1 FAIL)")
    drill.add_argument("--base-url", help="a sandbox API with /customers CRUD (default: the "
                       "bundled demo CRM on a free port); its state is restored")
    drill.add_argument("--out", type=Path, default=Path("./drill-reports"),
                       help="where drill-<timestamp>.json and .md go (default ./drill-reports)")
    drill.add_argument("--writes", type=_at_least_two, default=50,
                       help="bad writes the agent tries (default 50)")
    drill.add_argument("--stop", choices=["tripwire", "operator"], default="tripwire",
                       help="who stops the agent (default tripwire)")
    drill.add_argument("--database-url", help="a scratch store (default: temporary SQLite)")
    drill.add_argument("--record", action="store_true",
                       help="post the report to a running gateway (GATEWAY_TOKEN, an approver "
                            "or admin): its audit log keeps the drill's times for the autonomy "
                            "report")
    drill.add_argument("--admin-url", help="that gateway's admin listener (default: "
                                           "$GATEWAY_ADMIN_URL or http://127.0.0.1:8081)")
    from gateway import operator
    operator.add_operator_commands(commands)
    return parser


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("at least 2")
    return value


def _settings(args: argparse.Namespace) -> Settings:
    flags = {k: v for k, v in vars(args).items()
             if k in ("policies_dir", "proxy__host", "proxy__port", "admin__host", "admin__port",
                      "database_url", "dev", "workers")}
    return load_settings(args.config, FLAGS, **flags)


def _operator_access(settings: Settings) -> tuple[Settings, list[str]]:
    """Refuse to start with no operator, unless in development (then mint a token)."""
    if settings.operators:
        return settings, []
    if not settings.dev:
        raise SettingsError("no operators are configured, so nobody could reach the admin API "
                            "(to release a freeze, say). Add operators to the settings file, or "
                            "start with --dev for local development.")
    token, operator = dev_operator_token()
    settings = settings.model_copy(update={"operators": [operator]})
    return settings, ["development mode: a one-time admin token for this run (not stored):",
                      f"    export GATEWAY_TOKEN={token}"]


def cmd_serve(args: argparse.Namespace) -> int:
    settings, banner = _operator_access(_settings(args))
    if settings.workers > 1:
        from gateway import workers
        return workers.run(settings, banner)
    from gateway.server import run
    run(settings, banner)
    return 0


def _store_chosen(args: argparse.Namespace) -> bool:
    """Whether the user named a database (flag, environment or settings file)."""
    if args.database_url is not None or any(k.upper() == "GATEWAY_DATABASE_URL"
                                            for k in os.environ):
        return True
    return args.config is not None and "database_url" in read_settings_file(args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo CRM starts from its seed data every time, so the gateway's store does too:
    a journal of an earlier run would show entries (and rollback conflicts) about
    customers that are back to their seed state. ``--database-url`` keeps one."""
    scratch = None
    if not _store_chosen(args):
        scratch = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
        args.database_url = f"sqlite+aiosqlite:///{scratch / 'gateway.db'}"
    try:
        return _demo(args, scratch)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _demo(args: argparse.Namespace, scratch: Path | None) -> int:
    from gateway.demo.crm import create_app
    from gateway.demo.mcp import DemoApp
    from gateway.server import bind, run
    from gateway.store.diagnose import safe_url
    args.dev = True
    settings = _settings(args)
    if not settings.agents:
        settings = settings.model_copy(update={"agents": [
            AgentSpec(name="demo-agent", key_sha256=sha256_hex(DEMO_AGENT_KEY))]})
    settings, banner = _operator_access(settings)
    if settings.workers > 1:
        raise SettingsError("gateway demo runs one process; use gateway serve --workers N")
    crm = bind("127.0.0.1", args.crm_port, "demo CRM (--crm-port)")
    banner = [f"demo CRM API on http://127.0.0.1:{crm.getsockname()[1]} "
              f"(policies: {settings.policies_dir})",
              f"demo agent key: {DEMO_AGENT_KEY}",
              f"demo store: {scratch / 'gateway.db'} (new for this run, like the CRM's data; "
              "removed at exit: pass --database-url to keep one)" if scratch is not None
              else f"demo store: {safe_url(settings.database_url)} (kept across runs; the demo "
              "CRM starts from its seed data each time)", *banner]
    if args.crm_port != 3000:
        banner.insert(1, f"note: policies/crm.yaml expects the CRM on port 3000; edit its "
                         f"base_url to http://127.0.0.1:{args.crm_port}")
    banner.insert(1, f"demo CRM tools over MCP on http://127.0.0.1:{crm.getsockname()[1]}/mcp "
                     "(policies/crm-tools.yaml: agents use http://127.0.0.1:8080/crm-tools)")
    run(settings, banner, beside=(DemoApp(create_app()), crm))
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from gateway.policies import credential_warnings, load_policies
    try:
        policy_set = load_policies(args.dir)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    from gateway.core.reversibility import explain, warnings
    if getattr(args, "policy_command", "check") == "explain":
        rows = [("UPSTREAM", "RULE", "ACTION", "TIER", "CAPTURE", "UNDO", "REVERSIBILITY")]
        for name in sorted(policy_set.upstreams):
            for line in explain(policy_set.upstreams[name]):
                rows.append((line.upstream, line.rule, line.action, line.tier, line.capture,
                             line.undo, line.reversibility + (f" ({line.why})" if line.why
                                                              and line.reversibility == "irreversible"
                                                              else "")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        return 0
    for name in sorted(policy_set.upstreams):
        upstream = policy_set.upstreams[name]
        for warning in warnings(upstream):
            print(f"{upstream.source}: warning: {warning}")
    for warning in credential_warnings(policy_set):
        print(warning)
    rules = sum(len(u.spec.rules) for u in policy_set.upstreams.values())
    print(f"ok: {len(policy_set.files)} file(s), {len(policy_set.upstreams)} upstream(s) "
          f"({', '.join(sorted(policy_set.upstreams))}), {rules} rule(s), "
          f"revision {policy_set.revision}")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from gateway.drill import DrillOptions, main
    return main(DrillOptions(out=args.out, writes=args.writes, stop=args.stop,
                             base_url=args.base_url, database_url=args.database_url,
                             record=args.record, admin_url=args.admin_url))


def cmd_hash(args: argparse.Namespace) -> int:
    secret = args.secret
    if secret is None and not sys.stdin.isatty():  # piped: its first line
        secret = sys.stdin.readline().rstrip("\r\n") or None
        if secret is None:
            raise StartupError("no secret to hash: give it as an argument (gateway hash "
                               "SECRET), on stdin, or type it at a terminal")
    if secret is None:
        secret = getpass.getpass("secret: ")
    print(sha256_hex(secret))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"serve": cmd_serve, "demo": cmd_demo, "hash": cmd_hash, "drill": cmd_drill}
    if hasattr(args, "operator_handler"):  # approvals, killswitch, journal, rollback, audit
        from gateway import operator
        return operator.run(args)
    try:
        if args.command == "policy" and args.policy_command == "init":
            from gateway.operator.policy_init import cmd_policy_init
            return cmd_policy_init(args)
        if args.command == "policy":
            return cmd_policy_check(args)
        return handlers[args.command](args)
    except (SettingsError, PolicyError) as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a port already in use
        print(f"gateway: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
