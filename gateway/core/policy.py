"""Policy files as values, and the decision for one call.

One file describes one upstream: its base URL, the credential to inject, a
default action and rules tried in file order. ``PolicySet`` is every upstream
of a directory with a content hash (its revision); ``PolicySet.decide`` is the
pure decision function: request in, ``Decision`` out, a reason in every branch.
The strict schema below (``extra="forbid"``) is what ``gateway policy check``
enforces; ``gateway.core.policy_loader`` maps its errors to ``file:line``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.core.cel import Condition, ConditionError
from gateway.core.model import Decision, Verdict, method_list
from gateway.core.template import PathTrie, Template, TemplateError
from gateway.core.tripwires import TripwireSpec

UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Credentials(_Strict):
    header: str = Field(min_length=1)
    value: str


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


class Rule(_Strict):
    id: str = Field(min_length=1)
    match: Match = Match()
    action: Literal["allow", "deny", "hold"]
    approval: Approval | None = None
    capture: Capture | Literal[False] | None = None
    undo: UndoSpec | Literal["none"] | None = None
    volatile: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _bound_names(self) -> Rule:
        bound = set(Template.parse(self.match.path).names)
        for what, spec in (("capture", self.capture), ("undo", self.undo)):
            if isinstance(spec, (Capture, UndoSpec)):
                missing = set(Template.parse(spec.path).names) - bound
                if missing:
                    raise ValueError(f"{what} path uses {{{', '.join(sorted(missing))}}}, "
                                     f"which match.path {self.match.path!r} does not bind")
        if self.approval is not None and self.action != "hold":
            raise ValueError("approval is only allowed on rules with action: hold")
        return self


class PolicyFile(_Strict):
    version: Literal[1] = 1
    upstream: str
    base_url: str
    credentials: Credentials | None = None
    default: Literal["allow", "deny", "hold"] = "deny"
    timeout: float | None = Field(default=None, gt=0)
    volatile: tuple[str, ...] = ()  # fields every rule's drift check ignores (updated_at...)
    rules: tuple[Rule, ...] = ()
    tripwires: tuple[TripwireSpec, ...] = ()  # stop conditions on this upstream's writes

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
    """One compiled policy file."""

    spec: PolicyFile
    source: str
    credential_value: str | None
    trie: PathTrie
    conditions: dict[int, Condition]
    templates: dict[int, Template]

    @property
    def name(self) -> str:
        return self.spec.upstream

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    def rule(self, rule_id: str | None) -> Rule | None:
        for rule in self.spec.rules:
            if rule.id == rule_id:
                return rule
        return None

    def needs_body(self, candidates: list[tuple[int, dict[str, str]]]) -> bool:
        """True when some candidate rule's ``when`` may look at the body."""
        return bool(self.conditions) and any(index in self.conditions for index, _ in candidates)


@dataclass(slots=True)
class PolicySet:
    upstreams: dict[str, Upstream]
    revision: str
    files: tuple[str, ...] = field(default_factory=tuple)

    def decide(self, upstream: Upstream, view: CallView,
               candidates: list[tuple[int, dict[str, str]]] | None = None) -> Decision:
        """First matching rule decides; an unevaluable ``when`` denies.

        ``candidates`` are the trie's matches for ``view.segments`` when the
        caller already has them.
        """
        if candidates is None:
            candidates = upstream.trie.match(view.segments)
        for index, params in candidates:
            rule = upstream.spec.rules[index]
            if view.method not in rule.match.methods:
                continue
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
                            self.revision, upstream.name, params)
        verdict = Verdict(upstream.spec.default)
        return Decision(verdict, None, f"{_PAST[verdict]} by default (no rule matched)",
                        self.revision, upstream.name, {})


_PAST = {Verdict.ALLOW: "allowed", Verdict.DENY: "denied", Verdict.HOLD: "held"}


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
