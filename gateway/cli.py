"""The ``gateway`` command: serve, demo, policy check, hash.

Flags map one to one onto ``Settings`` fields; see ``gateway --help``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from gateway.errors import PolicyError
from gateway.settings import (
    AgentSpec,
    Settings,
    SettingsError,
    dev_operator_token,
    load_settings,
    sha256_hex,
)

DEMO_AGENT_KEY = "demo-agent-key"


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (YAML)")
    parser.add_argument("--policies", type=Path, dest="policies_dir", help="policy directory")
    parser.add_argument("--host", dest="proxy__host", help="proxy listener host")
    parser.add_argument("--port", type=int, dest="proxy__port", help="proxy listener port")
    parser.add_argument("--admin-host", dest="admin__host", help="admin listener host")
    parser.add_argument("--admin-port", type=int, dest="admin__port", help="admin listener port")
    parser.add_argument("--database-url", dest="database_url",
                        help="sqlite+aiosqlite:///./gateway.db or postgresql+asyncpg://...")
    parser.add_argument("--workers", type=_at_least_one, dest="workers",
                        help="processes serving the same ports (default 1); they share one "
                             "kill switch through the store")
    parser.add_argument("--dev", action="store_true", default=None,
                        help="local development: start without operators, print a one-time "
                             "admin token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the proxy and admin listeners")
    _serve_flags(serve)
    demo = commands.add_parser("demo", help="run the demo CRM API and the gateway in front of it")
    _serve_flags(demo)
    demo.add_argument("--crm-port", type=int, default=3000, help="demo CRM API port")
    policy = commands.add_parser("policy", help="policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="validate every policy file of DIR")
    check.add_argument("dir", type=Path)
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
    from gateway import operator
    operator.add_operator_commands(commands)
    return parser


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("at least 2")
    return value


def _settings(args: argparse.Namespace) -> Settings:
    flags = {k: v for k, v in vars(args).items()
             if k in ("policies_dir", "proxy__host", "proxy__port", "admin__host", "admin__port",
                      "database_url", "dev", "workers")}
    return load_settings(args.config, **flags)


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


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo.crm import create_app
    from gateway.server import bind, run
    args.dev = True
    settings = _settings(args)
    if not settings.agents:
        settings = settings.model_copy(update={"agents": [
            AgentSpec(name="demo-agent", key_sha256=sha256_hex(DEMO_AGENT_KEY))]})
    settings, banner = _operator_access(settings)
    if settings.workers > 1:
        raise SettingsError("gateway demo runs one process; use gateway serve --workers N")
    crm = bind("127.0.0.1", args.crm_port)
    banner = [f"demo CRM API on http://127.0.0.1:{crm.getsockname()[1]} "
              f"(policies: {settings.policies_dir})",
              f"demo agent key: {DEMO_AGENT_KEY}", *banner]
    if args.crm_port != 3000:
        banner.insert(1, f"note: policies/crm.yaml expects the CRM on port 3000; edit its "
                         f"base_url to http://127.0.0.1:{args.crm_port}")
    run(settings, banner, beside=(create_app(), crm))
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from gateway.policies import load_policies
    try:
        policy_set = load_policies(args.dir)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    rules = sum(len(u.spec.rules) for u in policy_set.upstreams.values())
    print(f"ok: {len(policy_set.files)} file(s), {len(policy_set.upstreams)} upstream(s) "
          f"({', '.join(sorted(policy_set.upstreams))}), {rules} rule(s), "
          f"revision {policy_set.revision}")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from gateway.drill import DrillOptions, main
    return main(DrillOptions(out=args.out, writes=args.writes, stop=args.stop,
                             base_url=args.base_url, database_url=args.database_url))


def cmd_hash(args: argparse.Namespace) -> int:
    secret = args.secret if args.secret is not None else getpass.getpass("secret: ")
    print(sha256_hex(secret))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"serve": cmd_serve, "demo": cmd_demo, "hash": cmd_hash, "drill": cmd_drill}
    if hasattr(args, "operator_handler"):  # approvals, killswitch, journal, rollback, audit
        from gateway import operator
        return operator.run(args)
    try:
        if args.command == "policy":
            return cmd_policy_check(args)
        return handlers[args.command](args)
    except (SettingsError, PolicyError) as exc:
        problems = exc.problems if isinstance(exc, PolicyError) else [str(exc)]
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a port already in use
        print(f"gateway: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
