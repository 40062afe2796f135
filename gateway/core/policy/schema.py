"""Policy files as values: the strict schema of a REST upstream's file (pure).

One file describes one upstream: its base URL, the credential to inject, a
default action and rules tried in file order. The strict schema below
(``extra="forbid"``) is what ``gateway policy check`` enforces;
``gateway.core.policy.loader`` maps its errors to ``file:line``. What a file with
``kind: mcp`` adds is ``gateway.core.policy.mcp_schema``; the parts both kinds
share (credentials, approval, delay, idempotency, the file's header) are here.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.core.cel import Condition
from gateway.core.model import method_list
from gateway.core.template import Template
from gateway.core.tripwire_spec import TripwireSpec
from gateway.errors import TemplateError

UPSTREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class BasicCredential(Strict):
    username: str
    password: str


class QueryCredential(Strict):
    name: str = Field(min_length=1)
    value: str


class SigV4Credential(Strict):
    access_key_id: str = Field(min_length=1)
    secret_access_key: str = Field(min_length=1)
    session_token: str | None = None
    region: str = Field(min_length=1)
    service: str = Field(min_length=1)


class Credentials(Strict):
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


class Match(Strict):
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


class Approval(Strict):
    wait: float = Field(default=0, ge=0)
    expires: float | None = Field(default=None, gt=0)
    approvers: int = Field(default=1, ge=1)
    roles: tuple[Literal["approver", "admin"], ...] | None = None
    operators: tuple[str, ...] | None = None
    # error: a call still pending when ``wait`` ends gets 409 approval_pending (SDKs raise
    # it) instead of 202; it still runs once if approved
    answer: Literal["accepted", "error"] = "accepted"


class Capture(Strict):
    path: str

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if "*" in Template.parse(value).segments or "**" in Template.parse(value).segments:
            raise ValueError("capture path may use {name} segments but not * or **")
        return value


class UndoSpec(Strict):
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


class Idempotency(Strict):
    """``idempotency: {header: NAME}``: every write sent without NAME gets it, set to its
    journal entry id, so an upstream that dedupes by key (Stripe's ``Idempotency-Key``)
    applies anything sent twice, by anyone, once."""

    header: str = Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


Mode = Literal["enforce", "observe", "shadow"]
Action = Literal["allow", "deny", "hold", "delay"]


class Delay(Strict):
    """``action: delay``: the call runs by itself this many seconds after it was made,
    unless an operator rejects it first or the kill switch covers it when it falls due."""

    seconds: float = Field(gt=0, le=30 * 86400)


def check_action_extras(action: str, approval: Approval | None, delay: Delay | None) -> None:
    if approval is not None and action != "hold":
        raise ValueError("approval is only allowed on rules with action: hold")
    if action == "delay" and delay is None:
        raise ValueError("action: delay needs delay: {seconds: N}")
    if delay is not None and action != "delay":
        raise ValueError("delay is only allowed on rules with action: delay")


class Rule(Strict):
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
        check_action_extras(self.action, self.approval, self.delay)
        return self


class PolicyBase(Strict):
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


class PolicyFile(PolicyBase):
    """A REST upstream (``kind: http``, the default)."""

    kind: Literal["http"] = "http"
    rules: tuple[Rule, ...] = ()
