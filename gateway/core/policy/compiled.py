"""A policy file compiled: its rules' path trie, conditions and templates, and the
credential with ``${VAR}`` expanded (pure). ``gateway.core.policy.loader`` builds
these; ``gateway.core.policy.decide`` judges a call against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.cel import Condition
from gateway.core.policy.dispatch import Dispatch
from gateway.core.policy.mcp_schema import McpPolicyFile, McpRule
from gateway.core.policy.schema import Mode, PolicyFile, Rule, SigV4Credential
from gateway.core.redact import MIN_ECHO, Echoes
from gateway.core.template import PathTrie, Template


@dataclass(frozen=True, slots=True)
class Credential:
    """A policy's credential with ``${VAR}`` expanded: headers to set, a query
    parameter to add, or the SigV4 keys the sender signs with (``sigv4``)."""

    headers: tuple[tuple[str, str], ...] = ()  # lower-case names
    query: tuple[str, str] | None = None
    sigv4: SigV4Credential | None = None
    # secrets sent only encoded, which an upstream may answer decoded: a Basic
    # credential's password and its ``user:password`` pair
    decoded: tuple[str, ...] = ()

    @property
    def replaces(self) -> frozenset[str]:
        """Agent headers this credential supersedes (never forwarded beside it)."""
        names = {name for name, _ in self.headers}
        if self.sigv4 is not None:
            names |= {"authorization", "x-amz-date", "x-amz-security-token",
                      "x-amz-content-sha256"}
        return frozenset(names)

    @property
    def sent(self) -> tuple[str, ...]:
        """The secret values that go on the wire, which an upstream may echo back: the
        header's value and its token (``Bearer t``'s ``t``), the query value, a SigV4
        session token (the secret key itself is never sent)."""
        values: list[str] = []
        for _, value in self.headers:
            values.append(value)
            scheme, _, token = value.partition(" ")
            if scheme and token.strip():
                values.append(token.strip())
        if self.query is not None:
            values.append(self.query[1])
        if self.sigv4 is not None and self.sigv4.session_token:
            values.append(self.sigv4.session_token)
        return tuple(v for v in values if v)

    @property
    def echoed(self) -> tuple[str, ...]:
        """What an answer must not show: the values ``sent``, and those sent ``decoded``."""
        return self.sent + tuple(v for v in self.decoded if v)

    @property
    def unhidden(self) -> str | None:
        """Why an echo of this credential is not hidden, if one of its values is too short
        to replace (``MIN_ECHO``); the warning names no value."""
        if not any(len(v) < MIN_ECHO for v in self.echoed):
            return None
        return (f"credentials: a value it sends (or the token after its scheme) is shorter "
                f"than {MIN_ECHO} characters, so it is not replaced where the upstream's "
                "answers echo it (it would be replaced wherever those characters occur); "
                "use the real credential")


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
    # the credential's values replaced where the upstream echoes them (None: none is sent)
    echoes: Echoes | None = field(init=False, default=None)
    # REST rules by the value their ``when`` requires (None: nothing to look up by)
    dispatch: Dispatch | None = field(init=False, default=None)
    # the rules whose ``when`` reads the headers, the query (asked of every call)
    _reads_headers: frozenset[int] = field(init=False, default=frozenset())
    _reads_query: frozenset[int] = field(init=False, default=frozenset())
    _reads_action: frozenset[int] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        sent = self.credential.echoed if self.credential is not None else ()
        replaced = [value for value in sent if len(value) >= MIN_ECHO]
        self.echoes = Echoes(replaced) if replaced else None
        self._reads_headers = frozenset(
            i for i, condition in self.conditions.items() if "headers" in condition.source)
        self._reads_query = frozenset(
            i for i, condition in self.conditions.items() if "query" in condition.source)
        self._reads_action = frozenset(  # an ``Action`` parameter: AWS's query protocol
            i for i, condition in self.conditions.items() if "action" in condition.source.lower()
            and ("query" in condition.source or "body" in condition.source))
        if self.conditions and not isinstance(self.spec, McpPolicyFile):
            dispatch = Dispatch(self.conditions, len(self.spec.rules))
            self.dispatch = dispatch if dispatch.narrows else None

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

    def judges_headers(self, candidates: list[tuple[int, dict[str, str]]]) -> bool:
        """True when some candidate rule's ``when`` reads ``request.headers``."""
        reads = self._reads_headers
        return bool(reads) and any(index in reads for index, _ in candidates)

    def judged_headers(self, candidates: list[tuple[int, dict[str, str]]],
                       ) -> frozenset[str] | None:
        """The lower-case header names candidate rules' ``when``s read (None: some reads
        them without naming them, ``request.headers.exists(...)``)."""
        names: frozenset[str] = frozenset()
        reads = self._reads_headers
        for index, _ in candidates if reads else ():
            if index in reads:
                read = self.conditions[index].headers
                if read is None:
                    return None
                names |= read
        return names

    def judges_action(self, candidates: list[tuple[int, dict[str, str]]]) -> bool:
        """True when some candidate rule's ``when`` may read an ``Action`` parameter (in the
        query or the body): AWS's query protocol names the operation there."""
        reads = self._reads_action
        return bool(reads) and any(index in reads for index, _ in candidates)

    def judges_query(self, candidates: list[tuple[int, dict[str, str]]]) -> bool:
        """True when some candidate rule's ``when`` reads ``request.query``."""
        reads = self._reads_query
        return bool(reads) and any(index in reads for index, _ in candidates)
