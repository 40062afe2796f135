"""``gateway policy init --openapi SPEC``: the I/O around ``gateway.core.openapi``.

Reads the description (JSON or YAML), infers the rules, checks the result with
the policy loader (the file it writes is one ``policy check`` accepts), writes
``DIR/NAME.yaml`` and prints the summary. A description it cannot read is one
line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.core.openapi import infer, read_api, render, summarize
from gateway.core.policy.loader import load_policy_set
from gateway.core.policy.schema import UPSTREAM_NAME
from gateway.errors import DescriptionError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL = re.compile(r"^https?://[^/?#\s]+(/[^?#\s]*)?$")


def parse_description(text: str, name: str) -> Any:
    """JSON when it looks like JSON, else YAML (a superset); raises DescriptionError."""
    try:
        if text.lstrip().startswith("{"):
            return json.loads(text)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except json.JSONDecodeError as exc:
        raise DescriptionError(f"{name}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DescriptionError(f"{name}{line}: invalid YAML: "
                               f"{getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise DescriptionError(f"{name}: nested too deeply to read") from None


def policy_from_description(doc: Any, upstream: str, base_url: str | None,
                            source: str) -> tuple[str, dict[str, int]]:
    """The policy text and the summary counts; raises DescriptionError."""
    if not UPSTREAM_NAME.match(upstream):
        raise DescriptionError(f"upstream name {upstream!r} must match [a-z0-9][a-z0-9-]*")
    try:
        api = read_api(doc)
    except RecursionError:
        raise DescriptionError(f"{source}: nested too deeply to read") from None
    url = (base_url or api.base_url or "").rstrip("/")
    if not url:
        raise DescriptionError(f"{source}: the description names no absolute server URL; "
                               "pass --base-url")
    if not _URL.match(url):
        raise DescriptionError(f"base URL {url!r} must be an http(s) URL without query")
    drafts = infer(api)
    summary = summarize(drafts)
    text = render(api, drafts, summary, upstream, url, source)
    env = {name: "set" for name in _VAR.findall(text)}
    _, problems = load_policy_set({f"{upstream}.yaml": text}, env)
    if problems:  # a bug here, not in the description: say which rule
        raise DescriptionError(f"the generated policy does not load: {problems[0]}")
    return text, summary.as_dict()


def cmd_policy_init(args: argparse.Namespace) -> int:
    spec: Path = args.openapi
    try:
        try:
            text = spec.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DescriptionError(f"{spec}: cannot read: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
        doc = parse_description(text, str(spec))
        policy, summary = policy_from_description(doc, args.upstream, args.base_url, spec.name)
        out = args.out / f"{args.upstream}.yaml"
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            out.write_text(policy, encoding="utf-8")
        except OSError as exc:
            raise DescriptionError(f"{out}: cannot write: {exc.strerror or exc}") from None
    except DescriptionError as exc:
        print(f"gateway policy init: {exc}", file=sys.stderr)
        return 1
    summary["file"] = str(out)  # type: ignore[assignment]
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['operations']} operations: {summary['reads']} reads, "
              f"{summary['writes']} writes ({summary['captured']} with capture, "
              f"{summary['undoable']} with undo, {summary['irreversible']} irreversible); "
              f"wrote {out}")
    return 0
