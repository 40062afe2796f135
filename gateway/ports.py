"""The interfaces the pipeline and the admin API depend on.

Adapters implement them: ``gateway.store.SqlStore`` the ``Store`` (SQLite or
PostgreSQL), ``gateway.proxy.upstream.AiohttpUpstream`` the ``Upstream``.
Tests substitute fakes where a narrow unit test wants one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.core.model import (
    AuditRecord,
    Freeze,
    FreezeScope,
    JournalEntry,
    JournalOutcome,
    JournalQuery,
)


class Store(Protocol):
    """Durable state: freezes, the change journal, the audit chain."""

    async def start(self) -> None:
        """Connect, then create or migrate the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when a trivial query round-trips."""

    # Kill switch ----------------------------------------------------------
    async def active_freezes(self) -> list[Freeze]: ...

    async def engage_freeze(self, freeze: Freeze) -> Freeze:
        """Persist ``freeze`` and append its audit record in one transaction.

        Engaging a scope and target that is already frozen returns the
        existing freeze unchanged (idempotent).
        """

    async def release_freeze(self, scope: FreezeScope, target: str | None, by: str,
                             reason: str, at: datetime) -> Freeze | None:
        """Lift the active freeze of that scope and target (None if there was none),
        with its audit record in the same transaction."""

    # Journal (hot path) ---------------------------------------------------
    async def journal_intent(self, entry: JournalEntry) -> None:
        """Commit the entry before the call is forwarded."""

    async def journal_outcome(self, entry_id: str, outcome: JournalOutcome) -> None: ...

    # Journal (admin) -------------------------------------------------------
    async def list_journal(self, query: JournalQuery) -> list[JournalEntry]: ...

    async def get_journal(self, entry_id: str) -> JournalEntry | None: ...

    # Audit ------------------------------------------------------------------
    async def append_audit(self, actor: str, action: str, detail: dict[str, Any],
                           at: datetime) -> AuditRecord: ...

    async def list_audit(self, after: int = 0, limit: int = 1000) -> list[AuditRecord]: ...


@dataclass(slots=True)
class UpstreamResponse:
    """Status, headers and a body that is either fully read or a byte stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None

    async def read(self) -> bytes:
        if self.body is not None:
            return self.body
        chunks = []
        if self.stream is not None:
            async for chunk in self.stream:
                chunks.append(chunk)
        self.body = b"".join(chunks)
        self.stream = None
        return self.body


class Upstream(Protocol):
    """HTTP to the APIs behind the gateway. Raises ``UpstreamUnreachable`` or
    ``UpstreamTimeout`` (gateway.errors) and nothing else for transport failures."""

    async def request(self, method: str, url: str, headers: Mapping[str, str] | list[tuple[str, str]],
                      body: bytes | AsyncIterator[bytes] | None, *, stream: bool = False,
                      timeout: float | None = None) -> UpstreamResponse: ...

    async def close(self) -> None: ...
