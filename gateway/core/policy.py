"""Policy files as values, and the decision for one call.

One file describes one upstream: its base URL, the credential to inject, a
default action and rules tried in file order. ``PolicySet`` is every upstream
of a directory with a content hash (its revision); ``PolicySet.decide`` is the
pure decision function: request in, ``Decision`` out, a reason in every branch.
The strict schema below (``extra="forbid"``) is what ``gateway policy check``
enforces; ``gateway.core.policy_loader`` maps its errors to ``file:line``.

A file with ``kind: mcp`` puts an MCP server behind the upstream name: its
rules (``McpRule``) match tool names (globs) and a ``when`` over the call's
``arguments``, capture the prior state with a read tool and undo with another
tool. JSON-RPC methods other than ``tools/call`` are protocol plumbing: they
pass, as reads.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.core.cel import Condition
from gateway.core.model import Decision, Verdict, method_list
from gateway.core.template import PathTrie, Template
from gateway.core.tripwire_spec import TripwireSpec
from gateway.errors import ConditionError, TemplateError

UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
TOOLS_CALL = "tools/call"  # the one MCP method rules judge; journaled as the entry's method
_TOOL_GLOB = re.compile(r"^[A-Za-z0-9_./*?\[\]!-]{1,128}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ROOTS = ("arguments", "prior")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class BasicCredential(_Strict):
    username: str
    password: str


class QueryCredential(_Strict):
    name: str = Field(min_length=1)
    value: str


class SigV4Credential(_Strict):
    access_key_id: str = Field(min_length=1)
    secret_access_key: str = Field(min_length=1)
    session_token: str | None = None
    region: str = Field(min_length=1)
    service: str = Field(min_length=1)


class Credentials(_Strict):
    """What the gateway sends the upstream as itself; exactly one kind:
    ``{header, value}``, ``{basic: {username, password}}``, ``{query: {name, value}}``
    or ``{aws_sigv4: {...}}``. Strings may name ``${VAR}`` from the environment."""

    header: str | None = Field(default=None, min_length=1)
    value: str | None = None
    basic: BasicCredential | None = None
    query: QueryCredential | None = None
    aws_sigv4: SigV4Credential | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Credentials:
        kinds = [k for k in ("header", "basic", "query", "aws_sigv4") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("credentials: give exactly one of {header, value}, basic, query "
                             "or aws_sigv4" + (f" (found {', '.join(kinds)})" if kinds else ""))
        if (self.header is None) != (self.value is None):
            raise ValueError("credentials: header and value go together")
        return self

    def templates(self) -> list[str]:
        """Every string that may name ``${VAR}``."""
        parts: list[BaseModel] = [p for p in (self.basic, self.query, self.aws_sigv4) if p]
        out = [self.value] if self.value is not None else []
        return out + [v for part in parts for v in part.model_dump().values() if isinstance(v, str)]


@dataclass(frozen=True, slots=True)
class Credential:
    """A policy's credential with ``${VAR}`` expanded: headers to set, a query
    parameter to add, or the SigV4 keys the sender signs with (``sigv4``)."""

    headers: tuple[tuple[str, str], ...] = ()  # lower-case names
    query: tuple[str, str] | None = None
    sigv4: SigV4Credential | None = None

    @property
    def replaces(self) -> frozenset[str]:
        """Agent headers this credential supersedes (never forwarded beside it)."""
        names = {name for name, _ in self.headers}
        if self.sigv4 is not None:
            names |= {"authorization", "x-amz-date", "x-amz-security-token",
                      "x-amz-content-sha256"}
        return frozenset(names)


class Match(_Strict):
    methods: tuple[str, ...] = METHODS
    path: str = "/**"
    when: str | None = None
    agents: tuple[str, ...] | None = None

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        return method_list(value, METHODS, "unknown method {method} (one of {allowed})",
                           wildcard=True)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        try:
            Template.parse(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("when")
    @classmethod
    def _when(cls, value: str | None) -> str | None:
        if value is not None:
            Condition(value)  # raises ValueError with the CEL problem
        return value


class Approval(_Strict):
    wait: float = Field(default=0, ge=0)
    expires: float | None = Field(default=None, gt=0)
    approvers: int = Field(default=1, ge=1)
    roles: tuple[Literal["approver", "admin"], ...] | None = None
    operators: tuple[str, ...] | None = None
    # error: a call still pending when ``wait`` ends gets 409 approval_pending (SDKs raise
    # it) instead of 202; it still runs once if approved
    answer: Literal["accepted", "error"] = "accepted"


class Capture(_Strict):
    path: str

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if "*" in Template.parse(value).segments or "**" in Template.parse(value).segments:
            raise ValueError("capture path may use {name} segments but not * or **")
        return value


class UndoSpec(_Strict):
    method: str
    path: str
    body: Any = None  # "prior" | "prior_fields" | a literal JSON value | None
    # fields (dotted: properties.createdate) never sent back: read-only ones the upstream
    # rejects or ignores (a description's readOnly, HubSpot's hs_object_id)
    omit: tuple[str, ...] = ()

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in METHODS:
            raise ValueError(f"unknown method {value!r}")
        return value.upper()

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        segments = Template.parse(value).segments
        if "*" in segments or "**" in segments:
            raise ValueError("undo path may use {name} segments but not * or **")
        return value


class Idempotency(_Strict):
    """``idempotency: {header: NAME}``: every write sent without NAME gets it, set to its
    journal entry id, so an upstream that dedupes by key (Stripe's ``Idempotency-Key``)
    applies anything sent twice, by anyone, once."""

    header: str = Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


Mode = Literal["enforce", "observe", "shadow"]
Action = Literal["allow", "deny", "hold", "delay"]


class Delay(_Strict):
    """``action: delay``: the call runs by itself this many seconds after it was made,
    unless an operator rejects it first or the kill switch covers it when it falls due."""

    seconds: float = Field(gt=0, le=30 * 86400)


def _action_extras(action: str, approval: Approval | None, delay: Delay | None) -> None:
    if approval is not None and action != "hold":
        raise ValueError("approval is only allowed on rules with action: hold")
    if action == "delay" and delay is None:
        raise ValueError("action: delay needs delay: {seconds: N}")
    if delay is not None and action != "delay":
        raise ValueError("delay is only allowed on rules with action: delay")


class Rule(_Strict):
    id: str = Field(min_length=1)
    match: Match = Match()
    action: Action
    mode: Mode | None = None  # None: the file's mode
    # None: GET and HEAD read, every other method writes; read: not journaled, not frozen
    effect: Literal["read", "write"] | None = None
    approval: Approval | None = None
    delay: Delay | None = None
    capture: Capture | Literal[False] | None = None
    undo: UndoSpec | Literal["none"] | None = None
    volatile: tuple[str, ...] = ()
    stream: bool = False  # its responses stream (server-sent events): no total time limit
    idempotency: Idempotency | None = None  # None: the file's

    @model_validator(mode="after")
    def _bound_names(self) -> Rule:
        if self.effect == "read" and (self.capture or self.undo not in (None, "none")):
            raise ValueError("effect: read calls are not journaled; capture and undo do not apply")
        bound = set(Template.parse(self.match.path).names)
        for what, spec in (("capture", self.capture), ("undo", self.undo)):
            if isinstance(spec, (Capture, UndoSpec)):
                missing = set(Template.parse(spec.path).names) - bound
                if missing:
                    raise ValueError(f"{what} path uses {{{', '.join(sorted(missing))}}}, "
                                     f"which match.path {self.match.path!r} does not bind")
        _action_extras(self.action, self.approval, self.delay)
        return self


class _PolicyBase(_Strict):
    version: Literal[1] = 1
    upstream: str
    base_url: str
    credentials: Credentials | None = None
    rewrite_urls: bool = False  # base_url in responses becomes {public_url}/{upstream}
    default: Literal["allow", "deny", "hold"] = "deny"
    mode: Mode = "enforce"  # every rule's (and the default's) unless a rule says otherwise
    timeout: float | None = Field(default=None, gt=0)
    volatile: tuple[str, ...] = ()  # fields every rule's drift check ignores (updated_at...)
    tripwires: tuple[TripwireSpec, ...] = ()  # stop conditions on this upstream's writes
    max_in_flight: int | None = Field(default=None, ge=1)  # calls at once, per process
    idempotency: Idempotency | None = None  # the header each write carries its entry id in

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        if not UPSTREAM_NAME.match(value):
            raise ValueError(f"upstream name {value!r} must match [a-z0-9][a-z0-9-]*")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
            raise ValueError(f"base_url {value!r} must be an http(s) URL without query")
        return value.rstrip("/")


class PolicyFile(_PolicyBase):
    """A REST upstream (``kind: http``, the default)."""

    kind: Literal["http"] = "http"
    rules: tuple[Rule, ...] = ()


def _check_template(value: Any, where: str) -> None:
    """Placeholders in tool arguments name ``{arguments.x}`` or ``{prior.x}`` (dotted)."""
    if isinstance(value, dict):
        for item in value.values():
            _check_template(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_template(item, where)
    elif isinstance(value, str):
        for name in _PLACEHOLDER.findall(value):
            root, _, rest = name.partition(".")
            if root not in _ROOTS or not rest or "" in rest.split("."):
                raise ValueError(f"{where}: placeholder {{{name}}} must name "
                                 "{arguments.NAME} or {prior.NAME}")


def _tool_name(value: str) -> str:
    if not _TOOL_GLOB.match(value) or any(c in value for c in "*?[]!"):
        raise ValueError(f"tool name {value!r} must be 1-128 of A-Z a-z 0-9 _ - . /")
    return value


class ToolMatch(_Strict):
    tools: tuple[str, ...] = ("*",)  # globs: * any run, ? one character, [abc] a set
    when: str | None = None  # CEL over arguments, tool, agent.name
    agents: tuple[str, ...] | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list):
            if not items:
                raise ValueError("tools must name at least one tool or glob")
            for item in items:
                if not isinstance(item, str) or not _TOOL_GLOB.match(item):
                    raise ValueError(f"tool glob {item!r} must be 1-128 of A-Z a-z 0-9 _ - . / "
                                     "and the glob characters * ? [ ]")
            return tuple(items)
        return value

    @field_validator("when")
    @classmethod
    def _when(cls, value: str | None) -> str | None:
        if value is not None:
            Condition(value)
        return value

    def names(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, glob) for glob in self.tools)


class ToolCapture(_Strict):
    """The read tool whose result is the prior state."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    _name = field_validator("tool")(_tool_name)

    @model_validator(mode="after")
    def _templates(self) -> ToolCapture:
        _check_template(self.arguments, "capture.arguments")
        if "{prior." in str(self.arguments):
            raise ValueError("capture.arguments: the prior state is what capture reads; "
                             "use {arguments.NAME}")
        return self


class ToolUndo(_Strict):
    """The tool that compensates, with ``prior``, ``prior_fields`` or literal arguments."""

    tool: str
    arguments: Literal["prior", "prior_fields"] | dict[str, Any]

    _name = field_validator("tool")(_tool_name)

    @model_validator(mode="after")
    def _templates(self) -> ToolUndo:
        _check_template(self.arguments, "undo.arguments")
        return self


class McpRule(_Strict):
    id: str = Field(min_length=1)
    match: ToolMatch = ToolMatch()
    action: Action
    mode: Mode | None = None  # None: the file's mode
    effect: Literal["read", "write"] = "write"  # read: not journaled, not frozen
    approval: Approval | None = None
    delay: Delay | None = None
    capture: ToolCapture | Literal[False] | None = None
    undo: ToolUndo | Literal["none"] | None = None
    volatile: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> McpRule:
        _action_extras(self.action, self.approval, self.delay)
        if self.effect == "read" and (self.capture or self.undo is not None):
            raise ValueError("effect: read calls are not journaled; capture and undo do not apply")
        if isinstance(self.undo, ToolUndo) and not isinstance(self.capture, ToolCapture):
            needs = (self.undo.arguments in ("prior", "prior_fields")
                     or "{prior." in str(self.undo.arguments))
            if needs:
                raise ValueError("undo uses the prior state, which needs a capture tool")
        return self


class McpPolicyFile(_PolicyBase):
    """An MCP server (``kind: mcp``): rules over tool names and arguments."""

    kind: Literal["mcp"]
    rules: tuple[McpRule, ...] = ()

    @field_validator("credentials")
    @classmethod
    def _header_credentials(cls, value: Credentials | None) -> Credentials | None:
        if value is not None and (value.query is not None or value.aws_sigv4 is not None):
            raise ValueError("an MCP upstream takes {header, value} or basic credentials")
        return value


AnyRule = Rule | McpRule


@dataclass(frozen=True, slots=True)
class CallView:
    """What the policy may look at. ``body`` is parsed lazily by the caller."""

    method: str
    path: str
    segments: list[str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    agent: str
    body: Any = None
    body_error: str | None = None  # why the body could not be parsed, if it could not


@dataclass(slots=True)
class Upstream:
    """One compiled policy file (REST or MCP: ``kind``)."""

    spec: PolicyFile | McpPolicyFile
    source: str
    credential: Credential | None
    trie: PathTrie
    conditions: dict[int, Condition]
    templates: dict[int, Template]
    streams: frozenset[str | None] = frozenset()  # ids of the rules with ``stream: true``

    @property
    def credential_value(self) -> str | None:
        """The injected header's value (``{header, value}`` and ``basic``)."""
        return self.credential.headers[0][1] if self.credential and self.credential.headers else None

    @property
    def name(self) -> str:
        return self.spec.upstream

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    @property
    def kind(self) -> str:
        return self.spec.kind

    def rule(self, rule_id: str | None) -> AnyRule | None:
        for rule in self.spec.rules:
            if rule.id == rule_id:
                return rule
        return None

    def idempotency_header(self, rule_id: str | None) -> str | None:
        """The header a write under ``rule_id`` carries its journal entry id in, if any:
        the rule's ``idempotency``, else the file's."""
        rule = self.rule(rule_id) if rule_id is not None else None
        own = getattr(rule, "idempotency", None)
        chosen = own if own is not None else self.spec.idempotency
        return chosen.header.lower() if chosen is not None else None

    def mode_of(self, rule_id: str | None) -> Mode:
        """The rule's own ``mode``, else the file's (the default action has the file's)."""
        rule = self.rule(rule_id) if rule_id is not None else None
        return rule.mode if rule is not None and rule.mode is not None else self.spec.mode

    def needs_body(self, candidates: list[tuple[int, dict[str, str]]]) -> bool:
        """True when some candidate rule's ``when`` may look at the body."""
        return bool(self.conditions) and any(index in self.conditions for index, _ in candidates)

    def judges_query(self, candidates: list[tuple[int, dict[str, str]]]) -> bool:
        """True when some candidate rule's ``when`` reads ``request.query``."""
        return bool(self.conditions) and any(
            "query" in self.conditions[index].source for index, _ in candidates
            if index in self.conditions)


@dataclass(slots=True)
class PolicySet:
    upstreams: dict[str, Upstream]
    revision: str
    files: tuple[str, ...] = field(default_factory=tuple)

    def decide(self, upstream: Upstream, view: CallView,
               candidates: list[tuple[int, dict[str, str]]] | None = None) -> Decision:
        """First matching rule decides; an unevaluable ``when`` denies. A rule for GET
        also judges HEAD.

        ``candidates`` are the trie's matches for ``view.segments`` when the
        caller already has them. MCP upstreams: see ``decide_tool``.
        """
        if isinstance(upstream.spec, McpPolicyFile):
            return self.decide_tool(upstream, upstream.spec, view)
        if candidates is None:
            candidates = upstream.trie.match(view.segments)
        for index, params in candidates:
            rule = upstream.spec.rules[index]
            methods = rule.match.methods
            if view.method not in methods and not (view.method == "HEAD" and "GET" in methods):
                continue  # HEAD is judged by the rules for GET (it reads the same thing)
            if rule.match.agents is not None and view.agent not in rule.match.agents:
                continue
            condition = upstream.conditions.get(index)
            if condition is not None:
                try:
                    if not condition.evaluate(activation(view, params)):
                        continue
                except ConditionError as exc:
                    return Decision(Verdict.DENY, rule.id, str(exc), self.revision,
                                    upstream.name, params)
            verdict = Verdict(rule.action)
            return Decision(verdict, rule.id, f"{_PAST[verdict]} by rule {rule.id}",
                            self.revision, upstream.name, params,
                            write=None if rule.effect is None else rule.effect == "write")
        verdict = Verdict(upstream.spec.default)
        return Decision(verdict, None, f"{_PAST[verdict]} by default (no rule matched)",
                        self.revision, upstream.name, {})


    def decide_tool(self, upstream: Upstream, spec: McpPolicyFile, view: CallView) -> Decision:
        """An MCP message: ``view.method`` is the JSON-RPC method, ``view.path`` the tool,
        ``view.body`` its arguments. Only ``tools/call`` is judged; the rest passes as a read.
        ``Decision.write`` says whether the call is journaled and frozen (``effect``)."""
        if view.method != TOOLS_CALL:
            return Decision(Verdict.ALLOW, None, f"{view.method or 'HTTP'} is not a tool call",
                            self.revision, upstream.name, write=False)
        for index, rule in enumerate(spec.rules):
            if not rule.match.names(view.path):
                continue
            if rule.match.agents is not None and view.agent not in rule.match.agents:
                continue
            condition = upstream.conditions.get(index)
            if condition is not None:
                try:
                    if not condition.evaluate(tool_activation(view)):
                        continue
                except ConditionError as exc:
                    return Decision(Verdict.DENY, rule.id, str(exc), self.revision,
                                    upstream.name, write=rule.effect == "write")
            verdict = Verdict(rule.action)
            return Decision(verdict, rule.id, f"{_PAST[verdict]} by rule {rule.id}",
                            self.revision, upstream.name, write=rule.effect == "write")
        verdict = Verdict(spec.default)
        return Decision(verdict, None, f"{_PAST[verdict]} by default (no rule matched)",
                        self.revision, upstream.name, write=True)


_PAST = {Verdict.ALLOW: "allowed", Verdict.DENY: "denied", Verdict.HOLD: "held",
         Verdict.DELAY: "delayed"}


def tool_visible(upstream: Upstream, agent: str, tool: str) -> bool:
    """Whether ``tools/list`` shows ``tool`` to ``agent``: False only when every
    decision its call could get is deny. A rule with a ``when`` may not apply,
    so a denying one lets later rules speak; an allowing or holding one shows it.

    >>> from gateway.core.policy_loader import compile_upstream
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
