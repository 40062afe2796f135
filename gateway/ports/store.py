"""The store's roles: what each service needs of durable state, and the bus between the
processes sharing it. ``gateway.store.sql.SqlStore`` implements the ``Store`` (SQLite or
PostgreSQL). Narrow unit tests substitute fakes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.core.approvals import ApprovalStatus, HeldCall, Vote
from gateway.core.killswitch import InFlight
from gateway.core.model import (
    AuditItem,
    AuditRecord,
    Freeze,
    FreezeScope,
    JournalEntry,
    JournalOutcome,
    JournalQuery,
    RunSummary,
)
from gateway.core.report import DecisionCount, HeldFact, RolledBack
from gateway.core.resend import LeftWrite
from gateway.core.rollback import Plan, PlanStatus, StepStatus


@dataclass(frozen=True, slots=True)
class FreezeChange:
    """What an engage or release did: the freeze engaged (or already in force) or
    released (None: nothing to release), and the kill switch as it left it."""

    freeze: Freeze | None
    generation: int
    active: list[Freeze]
    announced: bool = False  # the engage's ``announce`` went out with its commit
    audit_pending: bool = False  # its audit record waits for ``chain_pending_audit``


# A NOTIFY (channel, payload) a PostgreSQL store sends in a transaction of its own, so
# that it is delivered when that transaction commits (``Bus.at_commit``).
Notice = tuple[str, str]


class Bus(Protocol):
    """Messages between the processes sharing a store (``gateway.store.bus``): each
    member hears what the others publish (a message ``to`` one member: that one only)."""

    member: str

    async def start(self, deliver: Callable[[dict[str, Any]], None]) -> None: ...

    async def publish(self, message: dict[str, Any], to: str | None = None) -> None: ...

    async def members(self) -> set[str]: ...  # the other processes listening now

    async def gone(self, members: set[str]) -> set[str]:
        """Of the processes ``members``, those that died (nothing of theirs is left
        connected to the store or the bus)."""

    def at_commit(self, message: dict[str, Any]) -> Notice | None:
        """``message`` as a NOTIFY a store transaction on the same PostgreSQL can send,
        heard by the others when it commits; None when this bus has no such thing."""

    async def check(self) -> None:
        """Reconnect if the bus was lost; raises if it cannot."""

    async def close(self) -> None: ...


# The store's roles: each service depends on the one it uses, no more; ``Store`` is their
# union, what the wiring opens and the admin API reads. A new store implements every role.


class FreezeStore(Protocol):
    """The kill switch: freezes and their generation. Every engage and release adds one
    to the generation, in its transaction, with its audit record."""

    process: str  # this process's name (the kill switch's member when there is no bus)

    async def active_freezes(self) -> list[Freeze]: ...

    async def freeze_view(self) -> tuple[int, list[Freeze]]:
        """The generation and the freezes active at it, read together."""

    async def killswitch_generation(self) -> int: ...

    async def engage(self, freeze: Freeze, announce: Notice | None = None) -> FreezeChange:
        """Persist ``freeze`` and append its audit record in one transaction; the generation
        and the active freezes it left. ``announce`` goes out with the commit where the
        store can send it (``FreezeChange.announced``), only when this engage inserted the
        freeze. Where waiting for the audit chain would hold the engage up, the record is
        kept in the transaction for ``chain_pending_audit`` (``FreezeChange.audit_pending``).
        Engaging a scope and target already frozen changes nothing (the existing freeze's)."""

    async def release(self, scope: FreezeScope, target: str | None, by: str,
                      reason: str, at: datetime) -> FreezeChange:
        """Lift the active freeze of that scope and target (the change's freeze: None if
        there was none), with its audit record in the same transaction (after those of
        engages still pending)."""

    async def chain_pending_audit(self) -> int:
        """Link the audit records engages left pending (``FreezeChange.audit_pending``)
        into the chain, in order; how many."""

    async def warm_engage(self) -> None:
        """Make the first engage as quick as the next (engages, records, announces nothing)."""

    async def pending_intents(self, since: datetime) -> list[InFlight]:
        """Intents since then still without an outcome, oldest first (what an engage waits for)."""


class JournalStore(Protocol):
    """The change journal: a write's intent before it is sent, its outcome after."""

    async def journal_intent(self, entry: JournalEntry, *, unless_frozen: bool = True) -> bool:
        """Commit the entry before the call is forwarded. False, and nothing written,
        when an active freeze covers the entry's upstream or agent: decided by the store
        in the statement that inserts, so no intent a freeze covers commits after that
        freeze (whatever any process believes). ``unless_frozen=False``: operators' writes."""

    async def journal_outcome(self, entry_id: str, outcome: JournalOutcome) -> None: ...

    async def journal_outcomes(self, outcomes: list[tuple[str, JournalOutcome]]) -> list[bool]:
        """Several at once, in one batch; whether each found its intent."""

    async def stale_intents(self, process: str, before: datetime) -> list[str]:
        """``process``'s intents journaled before ``before`` and still without outcome."""

    async def abandon_intents(self, ids: list[str], why: str, now: datetime) -> None:
        """Those intents become ``unknown``, with ``why`` as their error."""

    async def list_journal(self, query: JournalQuery) -> list[JournalEntry]: ...

    async def get_journal(self, entry_id: str) -> JournalEntry | None: ...

    async def list_runs(self, query: JournalQuery) -> list[RunSummary]:
        """Agents' runs newest first (rollbacks' own entries left out); ``query``'s agent,
        run, upstream, since, until and limit apply."""

    async def mark_rolled_back(self, entry_id: str, plan_id: str, at: datetime) -> bool:
        """completed -> rolled_back, naming the plan whose compensation landed; False if
        the entry is not ``completed`` (already rolled back, or no such entry)."""


class AuditStore(Protocol):
    """The audit chain: every record hash-linked to the one before it."""

    async def append_audit(self, actor: str, action: str, detail: dict[str, Any],
                           at: datetime) -> AuditRecord: ...

    async def append_audit_many(self, items: list[AuditItem]) -> list[AuditRecord]:
        """Records chained in order, in one transaction."""

    async def list_audit(self, after: int = 0, limit: int = 1000) -> list[AuditRecord]: ...

    async def find_audit(self, terms: list[str], limit: int = 200) -> list[AuditRecord]:
        """Records whose detail names any of ``terms`` (ids, as JSON strings), oldest first."""


class HeldCallStore(Protocol):
    """Held calls (the approval queue).

    Every state change is a compare-and-set: it names the state the caller
    read and returns True iff the call was still in it (and is now changed).
    Of any number of concurrent callers, in any number of processes sharing
    the database, exactly one gets True; the others should re-read the call.
    A change's audit record (``record``; the sweeps' own) is appended in its
    transaction: both or neither."""

    async def create_held(self, call: HeldCall, record: AuditItem | None = None) -> None:
        """Persist a new held call (normally pending). A duplicate id raises."""

    async def get_held(self, call_id: str) -> HeldCall | None: ...

    async def count_held(self, status: str) -> int:
        """How many held calls are in ``status`` (e.g. pending, for the metrics gauge)."""

    async def list_held(self, status: str | None = None, agent: str | None = None,
                        upstream: str | None = None, limit: int = 100) -> list[HeldCall]:
        """Held calls matching every filter given, newest first (by ``at``, then id);
        without a status, shadowed writes (status ``shadow``: not in the queue) are left out."""

    async def record_votes(self, call_id: str, before: tuple[Vote, ...],
                           after: tuple[Vote, ...], record: AuditItem | None = None) -> bool:
        """Replace the votes ``before`` with ``after`` while the call is pending; False
        if it is not, or its votes are no longer exactly ``before`` (re-read, vote again)."""

    async def claim_held(self, call_id: str, before_votes: tuple[Vote, ...],
                         after_votes: tuple[Vote, ...], by: str, at: datetime,
                         lease_until: datetime, record: AuditItem | None = None) -> bool:
        """pending -> approved ("claimed for execution"), with the final votes,
        ``decided_by``, ``decided_at`` and the claim's lease. Wins only if the call is
        pending, its votes are exactly ``before_votes`` and it has not expired at ``at``.
        The winner forwards the call once, then calls ``finish_held`` before ``lease_until``."""

    async def release_claim(self, call_id: str, votes: tuple[Vote, ...] | None = None,
                            record: AuditItem | None = None) -> bool:
        """approved -> pending, clearing ``decided_by``, ``decided_at`` and the
        lease: the claimant did not send the call (a freeze engaged between claim
        and send, the capture or the journal failed). ``votes`` replace the
        call's when given (the vote that set off the execution is withdrawn)."""

    async def finish_held(self, call_id: str, status: ApprovalStatus,
                          response: dict[str, Any] | None, journal_id: str | None,
                          error: str | None, hidden: frozenset[str] = frozenset(),
                          record: AuditItem | None = None) -> bool:
        """approved -> ``status`` (EXECUTED or FAILED; anything else is a
        ValueError), recording the upstream response (readable without ``hidden``,
        the call's secrets it repeats), journal entry and error. False if the call
        was not approved (e.g. its lease lapsed and it was abandoned as unknown)."""

    async def reject_held(self, call_id: str, by: str, reason: str | None,
                          at: datetime, record: AuditItem | None = None) -> bool:
        """pending -> rejected, if not expired at ``at`` (whatever its votes)."""

    async def expire_held(self, now: datetime) -> list[str]:
        """pending -> expired (``approval.expired``) for every call whose
        ``expires_at <= now``; the ids changed, oldest first."""

    async def abandon_lapsed_claims(self, now: datetime) -> list[str]:
        """approved -> unknown (``approval.unknown``) for every claim whose
        ``lease_until < now`` (its process died mid-execution; never re-sent)."""

    async def due_held(self, now: datetime, limit: int = 100) -> list[HeldCall]:
        """Pending delayed calls whose ``due_at <= now``, the earliest due first."""

    async def claim_due(self, call_id: str, by: str, at: datetime,
                        lease_until: datetime, record: AuditItem | None = None) -> bool:
        """pending -> approved for a delayed call due at ``at`` (the gateway's own claim,
        exactly once like ``claim_held``), with ``decided_by`` and the lease."""

    async def suspend_due(self, call_id: str, extra: dict[str, Any], action: str) -> bool:
        """A pending delayed call becomes an ordinary held call: ``due_at`` cleared,
        ``extra`` replaced (the kill switch covered it when it fell due): ``action``."""

    async def promote_shadow(self, call_id: str, at: datetime, expires_at: datetime | None,
                             extra: dict[str, Any], record: AuditItem | None = None) -> bool:
        """shadow -> pending (held at ``at``), once; False if it is not a kept shadow write."""


class ResendStore(Protocol):
    """Held calls whose agent has not got their outcome, and the resends that rejoin them."""

    async def leave_held(self, call_id: str, key: str, at: datetime,
                         record: AuditItem | None = None) -> bool:
        """Its agent left, or was told to wait (409), at ``at``: a resend with ``key`` may
        rejoin it."""

    async def rejoin_held(self, key: str, agent: str, since: datetime) -> HeldCall | None:
        """A call left with ``key`` since ``since`` (``core.approvals.REJOINABLE``), its mark
        cleared, once, with ``agent``'s ``approval.rejoined`` record; None if none is."""


class LeftWriteStore(Protocol):
    """Writes whose agent left before their answer (``gateway.core.resend``), kept for the
    resend to rejoin; an answer is kept redacted, and exactly, sealed."""

    async def leave_write(self, left: LeftWrite) -> None:
        """Mark its entry's write as left at ``left.left_at``, or again once the resend
        that rejoined it left in turn (its state and answer are kept)."""

    async def settle_left(self, entry_id: str, state: str,
                          response: dict[str, Any] | None = None) -> None:
        """How the write ended (``core.resend.SETTLED``) and, answered, what it got."""

    async def rejoin_write(self, key: str, agent: str, since: datetime) -> LeftWrite | None:
        """The newest write ``agent`` left with ``key`` since ``since`` that no resend waits
        on, claimed by this one (until it leaves in turn); None if there is none."""

    async def left_write(self, entry_id: str) -> LeftWrite | None: ...

    async def left_keys(self, since: datetime) -> list[str]:
        """The keys of the writes left since ``since`` that no resend waits on (what a
        process that starts should know of)."""

    async def strand_writes(self, process: str, at: datetime) -> list[str]:
        """Dead ``process``'s writes still on their way that an agent sent (their intents
        carry a ``resend_key``), marked as left at ``at`` with an unknown outcome (they may
        have landed), unless already marked; a mark still ``sending`` becomes unknown. The
        keys of their resends."""

    async def sending_processes(self) -> list[str]:
        """The processes with writes on their way (open intents; on SQLite, those an agent
        sent): the ones whose death ``strand_writes`` is for."""


class PlanStore(Protocol):
    """Rollback plans. A plan is written once, whole; then its executor records each
    step's progress and finally the plan's status. Statuses and tuples read back
    exactly as written; a step's ``expected`` None (unknown) stays None and
    ``rollback.ABSENT`` reads back equal to ABSENT."""

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

    async def plans_for_entry(self, entry_id: str) -> list[Plan]:
        """Plans with a step for that journal entry, newest first."""

    async def claim_dry_run(self, plan_id: str) -> bool:
        """dry_run -> running (to apply a previewed plan); True for exactly one caller."""

    async def unfinished_plans(self) -> list[str]:
        """Ids of the plans still ``running`` (to resume after a restart), oldest first."""


class ReportStore(Protocol):
    """The autonomy report's counts."""

    async def decision_counts(self, since: datetime, until: datetime,
                              upstream: str | None = None) -> list[DecisionCount]:
        """Decisions on agents' writes in the window (the audit chain's ``call.*`` records
        that name an upstream), by upstream, rule, agent, decision and would-be decision."""

    async def held_facts(self, since: datetime, until: datetime,
                         upstream: str | None = None) -> list[HeldFact]:
        """The held calls (not kept shadow writes) held in the window."""

    async def rolled_back_counts(self, since: datetime, until: datetime,
                                 upstream: str | None = None) -> list[RolledBack]:
        """Agents' writes of the window now ``rolled_back``, by upstream, rule and agent."""

    async def last_audit(self, action: str) -> AuditRecord | None:
        """The newest audit record with this action (the last drill)."""


class LeaseStore(Protocol):
    """One executor across every process: a named lease taken by exactly one caller,
    renewed while its work runs; a dead holder's lease lapses. Recovery reads who died
    by them, and takes over its intents."""

    async def take_lease(self, name: str, owner: str, now: datetime, seconds: float) -> bool:
        """Take or renew lease ``name`` until ``now + seconds``; True for its one holder."""

    async def release_lease(self, name: str, owner: str) -> None:
        """Drop ``owner``'s lease ``name`` (nothing if another holds it)."""

    async def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        """Who holds lease ``name`` and until when, lapsed or not; None if nobody."""

    async def lapsed_leases(self, prefix: str, now: datetime) -> list[tuple[str, str]]:
        """(name, owner) of the leases named ``prefix...`` that lapsed before ``now``."""

    async def intent_processes(self, before: datetime) -> list[str]:
        """Processes with intents journaled before ``before`` and still without outcome."""

    async def recover_process(self, process: str, now: datetime
                              ) -> tuple[list[str], list[JournalEntry]]:
        """A dead process's intents become ``unknown`` (their ids); its unaudited entries."""

    async def unaudited(self, process: str, since: datetime | None = None,
                        before: datetime | None = None) -> list[JournalEntry]:
        """Entries in [``since``, ``before``) unrecorded (a held call's: nor ended nor claimed)."""

    async def tidy(self) -> None:
        """Upkeep, once a recovery round (PostgreSQL: the open intents' dead rows vacuumed)."""

    async def incarnation(self) -> str:
        """Which run of the database server answers: another after a restart or a
        promotion, when unflushed commits may be lost (SQLite's never changes)."""


class CheckpointStore(Protocol):
    """Signed checkpoints of the audit chain's Merkle tree (``gateway.store.checkpoints``;
    a stored checkpoint has ``size``, ``at``, ``root``, ``note`` and ``anchors``)."""

    async def audit_leaves(self, after: int, limit: int) -> list[tuple[int, str, str]]: ...
    async def add_checkpoint(self, size: int, root: str, note: str, at: Any) -> bool: ...
    async def anchor_checkpoint(self, size: int, anchors: dict[str, Any],
                                note: str | None = None) -> None: ...
    async def checkpoints(self, limit: int = 1000, upto: int | None = None) -> Any: ...
    async def flush(self) -> None: ...  # every commit so far durable: one read before, kept


class TripwireStore(AuditStore, Protocol):
    """The tripwires' windows, shared by every process, and the audit of a trip."""

    async def count_tripwire(self, name: str, value: float, window: float,
                             now: datetime) -> tuple[int, float]:
        """Add one event of ``value`` to tripwire window ``name`` (``window`` seconds long,
        shared by every process); the window's count and total before it."""


# What the services using more than one role take.
class ApprovalStore(HeldCallStore, ResendStore, AuditStore, Protocol):
    """The approval queue's: held calls, their audit, and the freezes a vote checks."""

    async def active_freezes(self) -> list[Freeze]: ...


class RollbackStore(PlanStore, JournalStore, AuditStore, LeaseStore, Protocol):
    """Rollbacks': plans, the entries they undo, their audit and the plan leases."""


class RecoveryStore(AuditStore, LeaseStore, Protocol):
    """Recovery's: the leases that say who died, and the audit of taking over."""


class Store(ApprovalStore, RollbackStore, RecoveryStore, TripwireStore, FreezeStore,
            ReportStore, CheckpointStore, LeftWriteStore, Protocol):
    """Durable state, every role (the combined ones name the rest: journal, held calls,
    plans, audit, leases): what the wiring opens (``gateway.store.sql.open_store``)."""

    process: str  # this process's name, journaled with its intents

    async def start(self) -> None:
        """Connect, then create or migrate the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when a trivial query round-trips."""

    def bus(self) -> Bus:
        """The bus of the processes sharing this store (after ``start``; not started)."""
