"""``gateway audit verify|export``: check the hash-chained audit log, or copy it out."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from gateway.core.audit_export import verify_export
from gateway.core.note import CosignatureVerifier, NoteVerifier, split_notes
from gateway.errors import NoteError, OperatorError
from gateway.operator.args import common_flags, non_negative_int
from gateway.operator.client import AdminClient
from gateway.operator.tables import fields, items, plural, print_json, text

T = TypeVar("T")
EXIT_BROKEN = 4
PAGE = 10_000  # the admin API's largest page
PROGRESS_EVERY = 10_000

EPILOG = """\
exit status: 0 ok, 1 the admin API answered with an error, 2 usage error or the
admin API is unreachable, 4 (verify) the chain is broken.
verify --export FILE works offline: 0 ok, 1 a bad record, a truncation or a
checkpoint that does not verify (named), 2 a file cannot be read.
"""


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the hash-chained audit log", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", parents=[common_flags()], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="check that no audit record was edited, removed or reordered (exit 4 if one was)")
    verify.add_argument("--export", metavar="FILE",
                        help="check this export (GET /v1/audit/export?format=jsonl) offline: "
                             "chain, Merkle roots against every checkpoint, signatures")
    verify.add_argument("--checkpoint", metavar="NOTE", action="append", default=[],
                        help="a file of signed checkpoints (as the file anchor writes them, or "
                             "GET /v1/audit/checkpoint) the export must match; repeatable")
    verify.add_argument("--key", metavar="VKEY",
                        help="the log's verifier key (GET /v1/audit/key), or a file holding it: "
                             "every checkpoint must carry its valid signature")
    verify.add_argument("--witness-key", metavar="VKEY", action="append", default=[],
                        help="a witness's cosignature key (type 0x04), or a file holding it: "
                             "it must have cosigned a checkpoint; repeatable")
    verify.set_defaults(operator_handler=cmd_verify, operator_local=verify_export_file)
    export = audit_commands.add_parser(
        "export", parents=[common_flags(json=False)],
        help="write the audit records as JSON Lines, oldest first, and print the head hash")
    export.add_argument("--out", metavar="FILE",
                        help="write to FILE (replaced only once the export is complete; "
                             "default: standard output)")
    export.add_argument("--after", type=non_negative_int, default=0, metavar="N",
                        help="only records with seq greater than N (to append to an earlier export)")
    export.set_defaults(operator_handler=cmd_export)


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorError(2, f"gateway: cannot read {what} {path}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None


def _key(value: str, flag: str, parse: Callable[[str], T]) -> T:
    text = _read(value, "key file") if Path(value).is_file() else value
    try:
        return parse(text)
    except NoteError as exc:
        raise OperatorError(2, f"gateway: {flag}: {exc}") from None


def verify_export_file(args: argparse.Namespace) -> int | None:
    """``verify --export``: offline; None without ``--export`` (then the API verifies)."""
    if not args.export:
        if args.checkpoint or args.key or args.witness_key:
            raise OperatorError(2, "gateway: --checkpoint, --key and --witness-key go with "
                                   "--export FILE")
        return None
    verifier = None if not args.key else _key(args.key, "--key", NoteVerifier.parse)
    witnesses = [_key(k, "--witness-key", CosignatureVerifier.parse) for k in args.witness_key]
    notes = []
    for path in args.checkpoint:
        try:
            notes.extend(split_notes(_read(path, "checkpoint file")))
        except NoteError as exc:
            raise OperatorError(1, f"audit export BROKEN: {path}: {exc}") from None
    try:
        with open(args.export, encoding="utf-8") as lines:
            check = verify_export(lines, notes, verifier, witnesses)
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorError(2, f"gateway: cannot read export {args.export}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    if args.json:
        print_json({"ok": check.ok, "records": check.records, "head": check.head,
                    "checkpoints": check.checkpoints, "signed": check.signed,
                    "largest_checkpoint": check.largest, "cosigned": check.cosigned,
                    "problem": check.problem,
                    "first_bad_seq": check.first_bad_seq})
    else:
        print(check.summary(), file=sys.stdout if check.ok else sys.stderr)
    return 0 if check.ok else 1


def cmd_verify(client: AdminClient, args: argparse.Namespace) -> int:
    data = client.call("GET", "/v1/audit/verify")
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise OperatorError(1, "error: bad_response: the verification has no ok field")
    if args.json:
        print_json(data)
    elif data["ok"]:
        print("\n".join(fields([("audit chain", "ok"), ("records", data.get("count")),
                                ("head", data.get("head"))])))
    else:
        print("\n".join(fields([
            ("audit chain", "BROKEN: a record was edited, removed or reordered"),
            ("records", f"{text(data.get('count'))} read up to the first bad one"),
            ("head", f"{text(data.get('head'))} (the last good record)"),
            ("first bad seq", data.get("first_bad_seq"))])))
    return 0 if data["ok"] else EXIT_BROKEN


def _pages(client: AdminClient, after: int) -> Iterator[dict[str, Any]]:
    """Every record with seq > ``after``, oldest first, one page at a time."""
    while True:
        page = items(client.call("GET", "/v1/audit", params={"after": after, "limit": PAGE}))
        if not page:
            return
        for record in page:
            seq = record.get("seq")
            if not isinstance(seq, int) or seq <= after:
                raise OperatorError(1, f"error: bad_response: audit record seq {seq!r} does not "
                                       f"follow seq {after}; the export stopped")
            after = seq
            yield record


def _write(client: AdminClient, args: argparse.Namespace, out: IO[str]) -> tuple[int, dict[str, Any] | None]:
    count, last = 0, None
    for last in _pages(client, args.after):
        out.write(json.dumps(last, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
        if args.out and count % PROGRESS_EVERY == 0:
            print(f"exported {count} records (up to seq {last['seq']})", file=sys.stderr)
    return count, last


def cmd_export(client: AdminClient, args: argparse.Namespace) -> int:
    if not args.out or args.out == "-":
        args.out = None
        count, last = _write(client, args, sys.stdout)
        sys.stdout.flush()
    else:
        count, last = _export_to_file(client, args, Path(args.out))
        print(f"exported {plural(count, 'record')} to {args.out}", file=sys.stderr)
    if last is None:
        print(f"no audit records after seq {args.after}", file=sys.stderr)
    else:
        print(f"head {text(last.get('hash'))} (seq {last['seq']}): publish it somewhere the "
              f"gateway cannot write", file=sys.stderr)
    return 0


def _export_to_file(client: AdminClient, args: argparse.Namespace,
                    path: Path) -> tuple[int, dict[str, Any] | None]:
    """Write beside ``path`` and rename, so a failed export never leaves a partial file."""
    try:
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                       dir=path.parent)
    except OSError as exc:
        raise OperatorError(2, f"gateway: cannot write {args.out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            result = _write(client, args, out)
        os.replace(partial, path)
    except OSError as exc:
        raise OperatorError(2, f"gateway: cannot write {args.out}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return result
