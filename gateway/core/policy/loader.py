"""Turn policy file texts into a ``PolicySet``, or into ``file:line: message`` problems.

Pure: the caller reads the files and passes ``{filename: text}`` and the
environment used to expand ``${VAR}`` in credentials. YAML is composed (not
just loaded) so every key and item keeps its line, and pydantic's error
locations are mapped back onto those lines.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.core.cel import Condition
from gateway.core.policy.compiled import Credential, Upstream
from gateway.core.policy.decide import PolicySet
from gateway.core.policy.mcp_schema import McpPolicyFile
from gateway.core.policy.schema import Credentials, PolicyFile, SigV4Credential
from gateway.core.template import PathTrie, Template

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
Loc = tuple[Any, ...]  # keys (any plain YAML value) and list indexes


class _Lines:
    """Plain Python data from a YAML node tree, plus the line of every location."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[Loc, int] = {}
        self.problems: list[str] = []
        self._loader = yaml.SafeLoader("")  # one per file: constructors keep state

    def build(self, node: yaml.Node, loc: Loc = ()) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, (*loc, "<key>"))
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise yaml.MarkedYAMLError(problem="a mapping key must be a plain value",
                                               problem_mark=key_node.start_mark)
                if key in out:
                    self.problems.append(f"{self.filename}:{key_node.start_mark.line + 1}: "
                                         f"duplicate key {key!r}")
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, loc + (i,)) for i, item in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)

    def release(self) -> None:
        """Drop the parse tree the constructor keeps (the loader holds reference cycles)."""
        self._loader.constructed_objects.clear()
        self._loader.dispose()

    def line(self, loc: Loc) -> int:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1


def _message(error: dict[str, Any], data: Any) -> str:
    loc = error["loc"]
    where = ".".join(str(p) for p in loc if not isinstance(p, str) or not p.startswith("function"))
    rule_id = _rule_id(loc, data)
    what = "tripwire" if loc and loc[0] == "tripwires" else "rule"
    prefix = f"{what} {rule_id!r}: " if rule_id else ""
    if error["type"] == "extra_forbidden":
        inside = f" in {'.'.join(map(str, loc[:-1]))}" if loc[:-1] else ""
        return f"{prefix}unknown key {loc[-1]!r}{inside}"
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "literal_error" and loc and loc[-1] == "action" and what == "rule":
        msg = f"unknown action {error.get('input')!r} (allow, deny, hold or delay)"
    if error["type"] == "literal_error" and loc and loc[-1] == "mode":
        msg = f"unknown mode {error.get('input')!r} (enforce, observe or shadow)"
    if error["type"] == "literal_error" and loc and loc[-1] == "effect":
        msg = f"unknown effect {error.get('input')!r} (read or write)"
    return f"{prefix}{where}: {msg}" if where else f"{prefix}{msg}"


def _rule_id(loc: Loc, data: Any) -> str | None:
    if len(loc) >= 2 and loc[0] in ("rules", "tripwires") and isinstance(loc[1], int):
        try:
            rule = data[loc[0]][loc[1]]
            return str(rule.get("id")) if isinstance(rule, dict) and rule.get("id") else None
        except (KeyError, IndexError, TypeError):
            return None
    return None


def _clean_loc(loc: tuple[Any, ...], keep_last: bool) -> Loc:
    """Drop the union branch names pydantic adds (e.g. "Capture", "literal[False]")."""
    body, last = (loc[:-1], loc[-1:]) if keep_last and loc else (loc, ())
    return tuple(p for p in body if isinstance(p, int) or p in _KNOWN_KEYS) + tuple(last)


_KNOWN_KEYS = {
    "version", "upstream", "base_url", "credentials", "default", "timeout", "rules", "header",
    "value", "id", "match", "action", "approval", "capture", "undo", "volatile", "methods",
    "path", "when", "agents", "wait", "expires", "approvers", "roles", "operators", "method",
    "body", "tripwires", "kind", "limit", "window", "per", "scope", "field", "allowed_hours",
    "start", "end", "days", "timezone", "min_calls", "tools", "effect", "tool", "arguments",
    "mode", "delay", "seconds", "basic", "username", "password", "name", "aws_sigv4",
    "access_key_id", "secret_access_key", "session_token", "region", "service", "rewrite_urls",
    "query", "answer", "omit", "max_in_flight", "idempotency",
}
_KINDS: dict[str, type[PolicyFile] | type[McpPolicyFile]] = {"http": PolicyFile,
                                                              "mcp": McpPolicyFile}


def parse_file(filename: str, text: str,
               ) -> tuple[PolicyFile | McpPolicyFile | None, dict[Loc, int], list[str]]:
    """One file: its validated model, its line map, and its problems."""
    lines = _Lines(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        return None, {}, [f"{filename}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}"]
    if root is None:
        return None, {}, [f"{filename}:1: empty policy file"]
    try:
        data = lines.build(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        return None, {}, [f"{filename}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}"]
    finally:
        lines.release()
    if lines.problems:
        return None, lines.lines, lines.problems
    if not isinstance(data, dict):
        return None, lines.lines, [f"{filename}:1: a policy file is a mapping (upstream, rules, ...)"]
    problems = _duplicate_ids(filename, data, lines)
    kind = data.get("kind", "http")
    if kind not in _KINDS:
        return None, lines.lines, [f"{filename}:{lines.line(('kind',))}: kind: unknown kind "
                                   f"{kind!r} (http or mcp)"]
    try:
        model = _KINDS[kind].model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": _clean_loc(e["loc"], keep_last=e["type"] == "extra_forbidden")}
                  for e in exc.errors()]
        for error in _specific(errors):
            loc = error["loc"]
            problems.append(f"{filename}:{lines.line(loc)}: {_message(dict(error), data)}")
        return None, lines.lines, sorted(set(problems), key=_line_key)
    return (model if not problems else None), lines.lines, problems


_UNION_MISS = ("literal_error", "model_type", "dict_type")


def _specific(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One problem per place where a union (``undo: none | {...}``) failed as a whole.

    A branch's deeper problem wins over "should be 'none'" further up; the
    branches that missed at the same place become one "should be A or B".
    """
    def misses(error: dict[str, Any]) -> bool:
        return error["type"] in _UNION_MISS and error["loc"][-1:] != ("action",)

    kept: list[dict[str, Any]] = []
    merged: dict[Loc, dict[str, Any]] = {}
    for error in errors:
        loc = error["loc"]
        near = [o for o in errors if o is not error and o["loc"][:len(loc)] == loc]
        if not misses(error) or not near:
            kept.append(error)
        elif all(misses(o) and o["loc"] == loc for o in near):
            expected = (str(error.get("ctx", {}).get("expected")) if error["type"] == "literal_error"
                        else "a mapping")
            if loc in merged:
                merged[loc]["msg"] += f" or {expected}"
            else:
                merged[loc] = {**error, "type": "union", "msg": f"should be {expected}"}
                kept.append(merged[loc])
    return kept


def _duplicate_ids(filename: str, data: dict[Any, Any], lines: _Lines) -> list[str]:
    problems: list[str] = []
    for key, what in (("rules", "rule"), ("tripwires", "tripwire")):
        items = data.get(key)
        seen: dict[str, int] = {}
        for i, item in enumerate(items if isinstance(items, list) else []):
            item_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(item_id, str):
                continue
            line = lines.line((key, i, "id"))
            if item_id in seen:
                problems.append(f"{filename}:{line}: duplicate {what} id {item_id!r} "
                                f"(first at line {seen[item_id]})")
            else:
                seen[item_id] = line
    return problems


def _line_key(problem: str) -> tuple[str, int]:
    name, _, rest = problem.partition(":")
    number = rest.split(":", 1)[0]
    return name, int(number) if number.isdigit() else 0


def load_policy_set(texts: Mapping[str, str], env: Mapping[str, str]) -> tuple[PolicySet | None, list[str]]:
    """Every file of a directory, in name order: a set, or the problems found.

    The revision hashes every file's name and bytes, so any edit gives a new one.
    """
    problems: list[str] = []
    upstreams: dict[str, Upstream] = {}
    first_file: dict[str, str] = {}
    digest = hashlib.sha256()
    for filename in sorted(texts):
        text = texts[filename]
        digest.update(filename.encode() + b"\0" + text.encode() + b"\0")
        model, line_map, file_problems = parse_file(filename, text)
        problems.extend(file_problems)
        if model is None:
            continue
        if model.upstream in upstreams:
            problems.append(f"{filename}:{line_map.get(('upstream',), 1)}: duplicate upstream "
                            f"{model.upstream!r} (also in {first_file[model.upstream]})")
            continue
        first_file[model.upstream] = filename
        missing = missing_variables(model, env)
        for name in missing:
            problems.append(f"{filename}:{line_map.get(('credentials',), 1)}: credentials: "
                            f"${{{name}}} is not set in the environment")
        if not missing:
            upstreams[model.upstream] = compile_upstream(model, filename, env)
    if not texts:
        problems.append("no policy files (*.yaml) found")
    if problems:
        return None, problems
    return PolicySet(upstreams, digest.hexdigest()[:16], tuple(sorted(texts))), []


def compile_upstream(model: PolicyFile | McpPolicyFile, source: str,
                     env: Mapping[str, str]) -> Upstream:
    trie = PathTrie()
    conditions: dict[int, Condition] = {}
    templates: dict[int, Template] = {}
    if isinstance(model, McpPolicyFile):  # tools are matched by glob, in file order: no trie
        conditions = {index: Condition(rule.match.when)
                      for index, rule in enumerate(model.rules) if rule.match.when is not None}
    for index, rule in enumerate(model.rules if isinstance(model, PolicyFile) else ()):
        template = Template.parse(rule.match.path)
        templates[index] = template
        trie.add(index, template)
        if rule.match.when is not None:
            conditions[index] = Condition(rule.match.when)
    credential = (resolve_credential(model.credentials, env)
                  if model.credentials is not None else None)
    streams = frozenset(rule.id for rule in (model.rules if isinstance(model, PolicyFile)
                                             else ()) if rule.stream)
    return Upstream(model, source, credential, trie, conditions, templates, streams)


def resolve_credential(spec: Credentials, env: Mapping[str, str]) -> Credential:
    """``spec`` with ``${VAR}`` expanded from ``env`` (an unset one is a problem at load)."""
    def expand(text: str) -> str:
        return _VAR.sub(lambda m: env.get(m.group(1), ""), text)

    if spec.header is not None and spec.value is not None:
        return Credential(headers=((spec.header.lower(), expand(spec.value)),))
    if spec.basic is not None:
        password = expand(spec.basic.password)
        pair = f"{expand(spec.basic.username)}:{password}"
        return Credential(headers=(("authorization",
                                    "Basic " + base64.b64encode(pair.encode()).decode()),),
                          decoded=(pair, password))
    if spec.query is not None:
        return Credential(query=(spec.query.name, expand(spec.query.value)))
    assert spec.aws_sigv4 is not None
    keys = spec.aws_sigv4
    return Credential(sigv4=SigV4Credential(
        access_key_id=expand(keys.access_key_id), secret_access_key=expand(keys.secret_access_key),
        session_token=expand(keys.session_token) if keys.session_token else None,
        region=expand(keys.region), service=expand(keys.service)))


def missing_variables(model: PolicyFile | McpPolicyFile, env: Mapping[str, str]) -> list[str]:
    if model.credentials is None:
        return []
    return [name for text in model.credentials.templates() for name in _VAR.findall(text)
            if name not in env]
