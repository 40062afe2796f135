"""The decision for one call: request in, ``Decision`` out, a reason in every branch (pure).

``PolicySet`` is every upstream of a directory with a content hash (its revision);
``PolicySet.decide`` is the pure decision function.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.core.model import Decision, Verdict
from gateway.core.policy.compiled import AnyRule, CallView, Upstream
from gateway.core.policy.mcp_schema import TOOLS_CALL, McpPolicyFile
from gateway.errors import ConditionError


@dataclass(slots=True)
class PolicySet:
    upstreams: dict[str, Upstream]
    revision: str
    files: tuple[str, ...] = field(default_factory=tuple)

    def decide(self, upstream: Upstream, view: CallView,
               candidates: list[tuple[int, dict[str, str]]] | None = None) -> Decision:
        """First matching rule decides, else the file's default; an unevaluable ``when``
        denies. One loop for both kinds of rule, which differ only in what a rule
        matches (``_candidates``) and what its ``when`` sees.

        REST: a rule for GET also judges HEAD; ``candidates`` are the trie's matches for
        ``view.segments`` when the caller already has them. MCP: ``view.method`` is the
        JSON-RPC method, ``view.path`` the tool, ``view.body`` its arguments; only
        ``tools/call`` is judged, the rest passes as a read. ``Decision.write`` says
        whether the call is journaled and frozen (a rule's ``effect``; REST without
        one: the method says).
        """
        tools = isinstance(upstream.spec, McpPolicyFile)
        if tools and view.method != TOOLS_CALL:
            return Decision(Verdict.ALLOW, None, f"{view.method or 'HTTP'} is not a tool call",
                            self.revision, upstream.name, write=False)
        seen: tuple[dict[str, str], dict[str, Any]] | None = None  # (params, activation)
        for index, rule, params in _candidates(upstream, view, candidates):
            if rule.match.agents is not None and view.agent not in rule.match.agents:
                continue
            write = None if rule.effect is None else rule.effect == "write"
            condition = upstream.conditions.get(index)
            if condition is not None:
                if seen is None or seen[0] != params:  # one per path binding, not per rule
                    seen = params, tool_activation(view) if tools else activation(view, params)
                try:
                    if not condition.evaluate(seen[1]):
                        continue
                except ConditionError as exc:  # REST: the method says, as for any refusal
                    return Decision(Verdict.DENY, rule.id, str(exc), self.revision,
                                    upstream.name, params, write=write if tools else None)
            verdict = _VERDICTS[rule.action]  # Verdict(...) is an Enum call, ~1 us a call
            return Decision(verdict, rule.id, f"{_PAST[verdict]} by rule {rule.id}",
                            self.revision, upstream.name, params, write=write)
        verdict = _VERDICTS[upstream.spec.default]
        return Decision(verdict, None, f"{_PAST[verdict]} by default (no rule matched)",
                        self.revision, upstream.name, {}, write=True if tools else None)


def _candidates(upstream: Upstream, view: CallView,
                matches: list[tuple[int, dict[str, str]]] | None,
                ) -> Iterator[tuple[int, AnyRule, dict[str, str]]]:
    """The rules that match the call, in file order, with the path's parameters: an MCP
    rule by its tool globs, a REST rule by the path trie and its methods."""
    spec = upstream.spec
    if isinstance(spec, McpPolicyFile):
        for index, tool_rule in enumerate(spec.rules):
            if tool_rule.match.names(view.path):
                yield index, tool_rule, {}
        return
    dispatch = upstream.dispatch  # only the rules whose ``when`` could hold are tried
    only = None if dispatch is None else dispatch.possible(view.query, view.headers, view.body)
    if matches is None:
        matches = upstream.trie.match(view.segments, only)
    elif only is not None:
        matches = [match for match in matches if match[0] in only]
    for index, params in matches:
        rule = spec.rules[index]
        methods = rule.match.methods
        if view.method in methods or (view.method == "HEAD" and "GET" in methods):
            yield index, rule, params  # HEAD is judged by the rules for GET (it reads the same)


_VERDICTS = {verdict.value: verdict for verdict in Verdict}
_PAST = {Verdict.ALLOW: "allowed", Verdict.DENY: "denied", Verdict.HOLD: "held",
         Verdict.DELAY: "delayed"}


def tool_visible(upstream: Upstream, agent: str, tool: str) -> bool:
    """Whether ``tools/list`` shows ``tool`` to ``agent``: False only when every
    decision its call could get is deny. A rule with a ``when`` may not apply,
    so a denying one lets later rules speak; an allowing or holding one shows it.

    >>> from gateway.core.policy.loader import compile_upstream
    >>> from gateway.core.policy.mcp_schema import McpRule, ToolMatch
    >>> spec = McpPolicyFile(kind="mcp", upstream="t", base_url="http://h", rules=(
    ...     McpRule(id="r", match=ToolMatch(tools=("get_*",)), action="allow"),))
    >>> up = compile_upstream(spec, "t.yaml", {})
    >>> tool_visible(up, "bot", "get_customer"), tool_visible(up, "bot", "delete_all")
    (True, False)
    """
    spec = upstream.spec
    if not isinstance(spec, McpPolicyFile):
        return True
    for rule in spec.rules:
        if not rule.match.names(tool):
            continue
        if rule.match.agents is not None and agent not in rule.match.agents:
            continue
        if rule.action != "deny" or (rule.mode or spec.mode) == "observe":
            return True  # observe: the rule's deny is recorded, not enforced
        if rule.match.when is None:
            return False
    return spec.default != "deny" or spec.mode == "observe"


def tool_activation(view: CallView) -> dict[str, Any]:
    """What an MCP rule's ``when`` sees: ``arguments``, ``tool`` and ``agent.name``."""
    arguments = view.body if view.body is not None else {}
    return {"arguments": arguments, "tool": view.path, "agent": {"name": view.agent}}


def activation(view: CallView, params: dict[str, str]) -> dict[str, Any]:
    return {
        "request": {
            "method": view.method,
            "path": view.path,
            "params": params,
            "query": dict(view.query),
            "headers": dict(view.headers),
            "body": view.body,
        },
        "agent": {"name": view.agent},
    }
