"""Which freeze, if any, stops a write.

A freeze has a scope: ``global`` stops every write, ``upstream`` the writes to
one upstream, ``agent`` the writes of one agent. Reads are never frozen.

>>> from gateway.core.model import Freeze, FreezeScope, utcnow
>>> f = Freeze(FreezeScope.UPSTREAM, "crm", "incident", "alice", utcnow())
>>> covering([f], "crm", "bot") is f, covering([f], "billing", "bot")
(True, None)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.core.model import Freeze, FreezeScope


def covers(freeze: Freeze, upstream: str, agent: str) -> bool:
    if freeze.scope is FreezeScope.GLOBAL:
        return True
    if freeze.scope is FreezeScope.UPSTREAM:
        return freeze.target == upstream
    return freeze.target == agent


def covering(freezes: Iterable[Freeze], upstream: str, agent: str) -> Freeze | None:
    """The first freeze that stops a write by ``agent`` to ``upstream``, global ones first."""
    found = [f for f in freezes if covers(f, upstream, agent)]
    if not found:
        return None
    order = {FreezeScope.GLOBAL: 0, FreezeScope.UPSTREAM: 1, FreezeScope.AGENT: 2}
    return min(found, key=lambda f: order[f.scope])


def scope_of(upstream: str | None, agent: str | None) -> tuple[FreezeScope, str | None]:
    """The scope an engage/release body names: neither field -> global.

    Raises ValueError when both are given (a freeze has one scope).
    """
    if upstream is not None and agent is not None:
        raise ValueError("name either upstream or agent, not both")
    if upstream == "" or agent == "":
        raise ValueError("an empty name freezes nothing; omit the field for a global freeze")
    if upstream:
        return FreezeScope.UPSTREAM, upstream
    if agent:
        return FreezeScope.AGENT, agent
    return FreezeScope.GLOBAL, None


@dataclass(frozen=True, slots=True)
class InFlight:
    """A covered write that was on its way when a freeze was engaged and did not
    finish within ``engage_wait``: cut off, or in a process that did not answer.
    It may or may not have reached the upstream (state ``unknown``)."""

    id: str  # the journal entry
    agent: str
    upstream: str
    method: str
    path: str
    process: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "upstream": self.upstream,
                "method": self.method, "path": self.path, "process": self.process,
                "state": "unknown"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InFlight:
        return cls(str(data["id"]), str(data["agent"]), str(data["upstream"]),
                   str(data["method"]), str(data["path"]), data.get("process"))
