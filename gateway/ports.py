"""The interfaces the pipeline and the admin API depend on.

Adapters implement them: ``gateway.store.SqlStore`` the ``Store`` (SQLite or
PostgreSQL), ``gateway.proxy.upstream.UpstreamClient`` the ``Upstream``.
Tests substitute fakes where a narrow unit test wants one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.core.approvals import ApprovalStatus, HeldCall, Vote
from gateway.core.killswitch import InFlight
from gateway.core.model import (
    AuditRecord,
    Freeze,
    FreezeScope,
    JournalEntry,
    JournalOutcome,
    JournalQuery,
)
from gateway.core.rollback import Plan, PlanStatus, StepStatus


@dataclass(frozen=True, slots=True)
class FreezeChange:
    """What an engage or release did: the freeze engaged (or already in force) or
    released (None: nothing to release), and the kill switch as it left it."""

    freeze: Freeze | None
    generation: int
    active: list[Freeze]


class Bus(Protocol):
    """Messages between the processes sharing a store (``gateway.store.bus``).

    Every member hears what another publishes (a message ``to`` one member is
    dropped by the others); nobody hears its own."""

    member: str

    async def start(self, deliver: Callable[[dict[str, Any]], None]) -> None: ...

    async def publish(self, message: dict[str, Any], to: str | None = None) -> None: ...

    async def members(self) -> set[str]:
        """The other processes listening now."""

    async def check(self) -> None:
        """Reconnect if the bus was lost; raises if it cannot."""

    async def close(self) -> None: ...


class Store(Protocol):
    """Durable state: freezes, the change journal, the audit chain, held calls,
    rollback plans."""

    process: str  # this process's name, journaled with its intents

    async def start(self) -> None:
        """Connect, then create or migrate the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when a trivial query round-trips."""

    def bus(self) -> Bus:
        """The bus of the processes sharing this store (after ``start``; not started)."""

    # Kill switch ----------------------------------------------------------
    # Every engage and release adds one to the generation, in its transaction.
    async def active_freezes(self) -> list[Freeze]: ...

    async def freeze_view(self) -> tuple[int, list[Freeze]]:
        """The generation and the freezes active at it, read together."""

    async def killswitch_generation(self) -> int: ...

    async def engage_freeze(self, freeze: Freeze) -> Freeze:
        """Persist ``freeze`` and append its audit record in one transaction.

        Engaging a scope and target that is already frozen returns the
        existing freeze unchanged (idempotent).
        """

    async def engage(self, freeze: Freeze) -> FreezeChange:
        """``engage_freeze``, with the generation and the active freezes it left."""

    async def release_freeze(self, scope: FreezeScope, target: str | None, by: str,
                             reason: str, at: datetime) -> Freeze | None:
        """Lift the active freeze of that scope and target (None if there was none),
        with its audit record in the same transaction."""

    async def release(self, scope: FreezeScope, target: str | None, by: str,
                      reason: str, at: datetime) -> FreezeChange:
        """``release_freeze``, with the generation and the active freezes it left."""

    # Journal (hot path) ---------------------------------------------------
    async def journal_intent(self, entry: JournalEntry, *, unless_frozen: bool = True) -> bool:
        """Commit the entry before the call is forwarded.

        False, and nothing written, when an active freeze covers the entry's
        upstream or agent: decided by the store in the statement that inserts,
        so no intent a freeze covers commits after that freeze (whatever any
        process believes). ``unless_frozen=False``: operators' writes."""

    async def journal_outcome(self, entry_id: str, outcome: JournalOutcome) -> None: ...

    async def pending_intents(self, since: datetime) -> list[InFlight]:
        """Intents journaled since then still without an outcome, oldest first."""

    # Journal (admin) -------------------------------------------------------
    async def list_journal(self, query: JournalQuery) -> list[JournalEntry]: ...

    async def get_journal(self, entry_id: str) -> JournalEntry | None: ...

    # Audit ------------------------------------------------------------------
    async def append_audit(self, actor: str, action: str, detail: dict[str, Any],
                           at: datetime) -> AuditRecord: ...

    async def append_audit_many(self, items: list[tuple[str, str, dict[str, Any], datetime]],
                                ) -> list[AuditRecord]:
        """(actor, action, detail, at) records chained in order, in one transaction."""

    async def list_audit(self, after: int = 0, limit: int = 1000) -> list[AuditRecord]: ...

    # Approvals (held calls) -------------------------------------------------
    # Every state change is a compare-and-set: it names the state the caller
    # read and returns True iff the call was still in it (and is now changed).
    # Of any number of concurrent callers, in any number of processes sharing
    # the database, exactly one gets True; the others should re-read the call.
    async def create_held(self, call: HeldCall) -> None:
        """Persist a new held call (normally pending). A duplicate id raises."""

    async def get_held(self, call_id: str) -> HeldCall | None: ...

    async def list_held(self, status: str | None = None, agent: str | None = None,
                        upstream: str | None = None, limit: int = 100) -> list[HeldCall]:
        """Held calls matching every filter given, newest first (by ``at``, then id)."""

    async def record_votes(self, call_id: str, before: tuple[Vote, ...],
                           after: tuple[Vote, ...]) -> bool:
        """Replace the votes ``before`` with ``after`` while the call is pending.

        False if the call is not pending or its votes are no longer exactly
        ``before`` (someone else voted meanwhile: re-read and vote again)."""

    async def claim_held(self, call_id: str, before_votes: tuple[Vote, ...],
                         after_votes: tuple[Vote, ...], by: str, at: datetime,
                         lease_until: datetime) -> bool:
        """pending -> approved ("claimed for execution"), with the final votes,
        ``decided_by``, ``decided_at`` and the claim's lease.

        Wins only if the call is pending, its votes are exactly
        ``before_votes`` and it has not expired at ``at``. The winner forwards
        the call once, then calls ``finish_held`` before ``lease_until``."""

    async def release_claim(self, call_id: str) -> bool:
        """approved -> pending, clearing ``decided_by``, ``decided_at`` and the
        lease but keeping the votes: the claimant did not send the call (a
        freeze engaged between claim and send)."""

    async def finish_held(self, call_id: str, status: ApprovalStatus,
                          response: dict[str, Any] | None, journal_id: str | None,
                          error: str | None) -> bool:
        """approved -> ``status`` (EXECUTED or FAILED; anything else is a
        ValueError), recording the upstream response, journal entry and error.
        False if the call was not approved (e.g. its lease lapsed and it was
        abandoned as unknown)."""

    async def reject_held(self, call_id: str, by: str, reason: str | None,
                          at: datetime) -> bool:
        """pending -> rejected, if not expired at ``at`` (whatever its votes)."""

    async def expire_held(self, now: datetime) -> list[str]:
        """pending -> expired for every call whose ``expires_at <= now``;
        the ids changed, oldest first."""

    async def abandon_lapsed_claims(self, now: datetime) -> list[str]:
        """approved -> unknown for every claim whose ``lease_until < now``
        (its process died mid-execution; never re-sent); the ids changed."""

    # Rollback plans -----------------------------------------------------------
    # A plan is written once, whole; then its executor records each step's
    # progress and finally the plan's status. Statuses and tuples read back
    # exactly as written; a step's ``expected`` None (unknown) stays None and
    # ``rollback.ABSENT`` reads back equal to ABSENT.
    async def create_plan(self, plan: Plan) -> None:
        """Persist ``plan`` and all its steps in one transaction. A duplicate id raises."""

    async def get_plan(self, plan_id: str) -> Plan | None:
        """The plan with its steps in ``seq`` order; None if there is no such plan."""

    async def list_plans(self, limit: int = 50) -> list[Plan]:
        """The ``limit`` newest plans (by ``created_at``, then id), newest first, with steps."""

    async def update_step(self, plan_id: str, seq: int, status: StepStatus,
                          detail: str | None, journal_id: str | None) -> None:
        """Set a step's status and detail (None clears it), and its journal entry
        unless ``journal_id`` is None (which keeps the one recorded before).
        LookupError if the plan has no step ``seq``."""

    async def set_plan_status(self, plan_id: str, status: PlanStatus) -> None:
        """Set the plan's status; LookupError if there is no such plan."""

    async def unfinished_plans(self) -> list[str]:
        """Ids of the plans still ``running`` (to resume after a restart), oldest first."""


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
