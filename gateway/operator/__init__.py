"""Operator commands of ``gateway``: approvals, killswitch, journal, rollback, audit,
shadow and report.

They talk to the admin REST API (see the contract) with the operator token
from ``GATEWAY_TOKEN`` and the admin URL from ``--admin-url``, else
``GATEWAY_ADMIN_URL``, else http://127.0.0.1:8081. Output is a readable table,
or with ``--json`` the API's JSON. Exit codes: 0 ok, 1 the API answered with an
error (printed as ``error: CODE: MESSAGE``), 2 usage error or admin API
unreachable, 3 a rollback plan has conflicts, failed steps or irreversible
entries, 4 the audit chain is broken.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from gateway.errors import OperatorError
from gateway.operator import approvals, audit, journal, killswitch, report, rollback, shadow
from gateway.operator.client import AdminClient, admin_url, token

COMMANDS = ("approvals", "killswitch", "journal", "rollback", "audit", "shadow", "report")

EXIT_PIPE_CLOSED = 141  # what a shell reports for a command ended by SIGPIPE

Handler = Callable[[AdminClient, argparse.Namespace], int]


def add_operator_commands(commands: Any) -> None:
    """Register the operator commands on the ``gateway`` subparsers."""
    for module in (approvals, killswitch, journal, rollback, audit, shadow, report):
        module.register(commands)


def run(args: argparse.Namespace) -> int:
    """Run the operator command parsed into ``args``; returns the exit code."""
    check = getattr(args, "operator_check", None)
    if check is not None:  # usage errors that argparse cannot see; exits 2 before any call
        check(args)
    handler: Handler = args.operator_handler
    try:
        local = getattr(args, "operator_local", None)
        done = None if local is None else local(args)  # needs no admin API (verify --export)
        if done is not None:
            return int(done)
        client = AdminClient(admin_url(args), token())
        try:
            return handler(client, args)
        finally:
            client.close()
    except OperatorError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `gateway audit export | head`: stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return EXIT_PIPE_CLOSED
