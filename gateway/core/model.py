"""Values the core passes around: decisions, freezes, journal entries, audit records.

They are plain frozen-ish dataclasses so that the core can build them, the
store can persist them and the admin API can render them without any of the
three knowing about the others.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import orjson

MUTATING_EXEMPT = frozenset({"GET", "HEAD", "OPTIONS"})


def is_mutating(method: str) -> bool:
    """Mutating = any method but GET, HEAD, OPTIONS (contract)."""
    return method.upper() not in MUTATING_EXEMPT


def method_list(value: Any, allowed: tuple[str, ...], problem: str,
                wildcard: bool = False) -> Any:
    """A method or list of methods, upper-cased and checked against ``allowed``
    (``*`` for all of them when ``wildcard``); other shapes are left to pydantic.
    ``problem`` formats the error with ``{method}`` and ``{allowed}``."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return value
    out: list[str] = []
    for method in items:
        if wildcard and method == "*":
            out.extend(allowed)
        elif isinstance(method, str) and method.upper() in allowed:
            out.append(method.upper())
        else:
            raise ValueError(problem.format(method=repr(method), allowed=", ".join(allowed)))
    return tuple(out)


class _Entropy:
    """os.urandom, drawn 4 KiB at a time: one system call per ~400 ids, not per id.

    A forked child starts with none (it must not repeat its parent's draws).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._at + size > len(self._pool):
                self._pool, self._at = os.urandom(4096), 0
            self._at += size
            return self._pool[self._at - size:self._at]

    def forget(self) -> None:
        self._pool, self._at = b"", 0
        self._lock = threading.Lock()


_ENTROPY = _Entropy()
os.register_at_fork(after_in_child=_ENTROPY.forget)


def new_id() -> str:
    """A 32-hex-digit id whose first 12 digits are the millisecond clock.

    Ids sort by creation time, like UUIDv7, which Python 3.11 lacks.

    >>> len(new_id())
    32
    """
    return f"{int(time.time() * 1000):012x}{_ENTROPY.take(10).hex()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime) -> str:
    """Fixed-width UTC text that sorts like the instant it names.

    >>> iso(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    '2026-01-02T03:04:05.000006Z'
    """
    if at.tzinfo is UTC and at.year >= 1000:  # every write formats several: no strftime
        if at.microsecond:  # orjson writes no fraction for a whole second
            return orjson.dumps(at, option=orjson.OPT_UTC_Z)[1:-1].decode()
        return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 (a trailing Z or an offset); naive times are taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Verdict(str, Enum):
    ALLOW = "allow"
    DENY = "deny"
    HOLD = "hold"
    DELAY = "delay"  # held, then run by itself after the rule's delay (gateway.core.autonomy)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one call, with the reason in every branch.

    ``write`` is None where the method says whether the call changes state
    (REST); an MCP ``tools/call`` is a write unless its rule says ``effect: read``.
    """

    verdict: Verdict
    rule: str | None
    reason: str
    revision: str
    upstream: str
    params: dict[str, str] = field(default_factory=dict)
    write: bool | None = None


class FreezeScope(str, Enum):
    GLOBAL = "global"
    UPSTREAM = "upstream"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Freeze:
    """One engaged kill switch: all writes, one upstream's, or one agent's."""

    scope: FreezeScope
    target: str | None
    reason: str
    by: str
    at: datetime
    id: str = field(default_factory=new_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope.value,
            "target": self.target,
            "reason": self.reason,
            "by": self.by,
            "at": iso(self.at),
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The agent's own account of itself, from the X-Agent-* headers."""

    run: str | None = None
    model: str | None = None
    prompt_version: str | None = None
    tool_version: str | None = None


@dataclass(frozen=True, slots=True)
class Undo:
    """The compensating call for one journaled write.

    ``body`` is the JSON value to send (already resolved from the prior
    state), ``content_type`` the original call's, so that a form-encoded API
    gets a form-encoded undo.
    """

    method: str
    path: str
    body: Any = None
    content_type: str = "application/json"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "body": self.body,
            "content_type": self.content_type,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Undo:
        return cls(
            method=data["method"],
            path=data["path"],
            body=data.get("body"),
            content_type=data.get("content_type") or "application/json",
        )


class JournalState(str, Enum):
    INTENT = "intent"  # committed before forwarding; the call may or may not have reached upstream
    COMPLETED = "completed"  # the upstream answered
    FAILED = "failed"  # the call was not answered (timeout, unreachable, agent went away)
    ROLLED_BACK = "rolled_back"  # completed, then compensated by a rollback plan
    SHADOW = "shadow"  # mode: shadow: journaled with its prior state, never sent
    UNKNOWN = "unknown"  # cut off by the kill switch while on its way: it may have landed


@dataclass(slots=True)
class JournalEntry:
    """One mutating call: what the agent asked, what was there before, what came back."""

    id: str
    at: datetime
    request_id: str
    agent: str
    checkpoint: Checkpoint
    upstream: str
    method: str
    path: str
    query: str
    rule: str | None
    decision: str
    policy_revision: str
    request_headers: dict[str, str]
    request_body: str | None
    request_body_sha256: str | None
    request_body_size: int
    request_content_type: str | None
    prior: Any
    prior_status: int | None
    capture_path: str | None
    undo: Undo | None
    reversible: bool
    state: JournalState = JournalState.INTENT
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None
    response_body_sha256: str | None = None
    response_body_size: int = 0
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    completed_at: datetime | None = None
    approval: dict[str, Any] | None = None  # the held call's approvals, when it was held
    after: Any = None  # the resource read after the write, when its response had no JSON body
    rolled_back_plan: str | None = None  # the plan whose compensation undid it (ROLLED_BACK)
    rolled_back_at: datetime | None = None
    mode: str | None = None  # observe or shadow (gateway.core.autonomy); None: enforced
    would_decide: str | None = None  # what the rules decided, when the mode did not enforce it
    # Opaque to the core: what rollback needs of secret-named and binary values, sealed by
    # gateway.core.seal (never rendered); None when the redacted values are the true ones.
    sealed: str | None = None
    sealed_outcome: str | None = None
    irreversible_reason: str | None = None  # why no undo is kept (e.g. a prior over the limit)
    # the key the agent's resends of this write have (gateway.core.resend.key_of); None for
    # a write no agent sends (a held call's execution, a rollback step)
    resend_key: str | None = None


@dataclass(frozen=True, slots=True)
class JournalOutcome:
    """What is written to an entry once the upstream answered (or did not)."""

    state: JournalState
    status: int | None
    response_headers: dict[str, str]
    response_body: str | None
    response_body_sha256: str | None
    response_body_size: int
    undo: Undo | None
    reversible: bool
    error: str | None
    timings: dict[str, float]
    completed_at: datetime
    after: Any = None  # the resource read after the write (see JournalEntry.after)
    sealed: str | None = None  # the true state the write left, when redaction changed it


@dataclass(frozen=True, slots=True)
class JournalQuery:
    agent: str | None = None
    upstream: str | None = None
    run: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[str, ...] | None = None
    limit: int = 100
    newest_first: bool = True
    method: str | None = None
    path: str | None = None  # a part of the path
    state: str | None = None
    decision: str | None = None
    would_decide: str | None = None
    after: tuple[datetime, str] | None = None  # a page's last (at, id): the next page from it


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One agent run (``X-Agent-Run``; None for writes sent without one), as journaled."""

    agent: str
    run: str | None
    first_at: datetime
    last_at: datetime
    writes: int  # sent (or refused on the way); shadowed writes are counted apart
    reversible: int  # writes with a known inverse
    rolled_back: int
    failed: int  # not answered, or answered 4xx/5xx
    upstreams: tuple[str, ...] = ()
    shadowed: int = 0  # proposed by a mode: shadow run, never sent (nothing to undo)

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "run": self.run, "first_at": iso(self.first_at),
                "last_at": iso(self.last_at), "writes": self.writes,
                "reversible": self.reversible, "irreversible": self.writes - self.reversible,
                "rolled_back": self.rolled_back, "failed": self.failed,
                "shadowed": self.shadowed, "upstreams": list(self.upstreams)}


AuditItem = tuple[str, str, dict[str, Any], datetime]  # a record to append: actor, action,
# detail, at


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }
