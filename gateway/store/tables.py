"""The SQL tables behind ``SqlStore``.

Types are kept plain so one schema serves SQLite and PostgreSQL alike: JSON
is text (``json.dumps``), instants are fixed-width ISO-8601 UTC text from
``gateway.core.model.iso`` (so text order is time order), flags are
booleans, bytes are ``LargeBinary`` (BLOB / BYTEA). The Alembic migrations
in ``migrations/`` own the schema; these classes mirror it for queries, and
``tests/store`` checks the two agree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, LargeBinary, Text, func, literal_column
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel


def _text() -> Any:
    return Field(sa_type=Text)


def _text_or_null() -> Any:
    return Field(default=None, sa_type=Text, nullable=True)


class JournalRow(SQLModel, table=True):
    """One ``JournalEntry``; the checkpoint is flattened into four columns."""

    __tablename__ = "journal"
    __table_args__ = (
        Index("ix_journal_at", "at"),
        Index("ix_journal_agent_at", "agent", "at"),
        Index("ix_journal_run", "run"),
        Index("ix_journal_upstream_at", "upstream", "at"),
    )

    id: str = Field(sa_type=Text, primary_key=True)
    at: str = _text()
    request_id: str = _text()
    agent: str = _text()
    run: str | None = _text_or_null()
    model: str | None = _text_or_null()
    prompt_version: str | None = _text_or_null()
    tool_version: str | None = _text_or_null()
    upstream: str = _text()
    method: str = _text()
    path: str = _text()
    query: str = _text()
    rule: str | None = _text_or_null()
    decision: str = _text()
    policy_revision: str = _text()
    request_headers: str = _text()
    request_body: str | None = _text_or_null()
    request_body_sha256: str | None = _text_or_null()
    request_body_size: int
    request_content_type: str | None = _text_or_null()
    prior: str | None = _text_or_null()
    prior_status: int | None = None
    capture_path: str | None = _text_or_null()
    undo: str | None = _text_or_null()
    reversible: bool
    state: str = _text()
    status: int | None = None
    response_headers: str = _text()
    response_body: str | None = _text_or_null()
    response_body_sha256: str | None = _text_or_null()
    response_body_size: int
    error: str | None = _text_or_null()
    timings: str = _text()
    completed_at: str | None = _text_or_null()
    approval: str | None = _text_or_null()  # JSON, when the call was held for approval (0002)
    after: str | None = _text_or_null()  # JSON, the resource read after the write (0003)
    process: str | None = _text_or_null()  # the gateway process that journaled it (0005)
    rolled_back_plan: str | None = _text_or_null()  # the plan that compensated it (0006)
    rolled_back_at: str | None = _text_or_null()
    mode: str | None = _text_or_null()  # observe | shadow; NULL = enforced (0009)
    would_decide: str | None = _text_or_null()  # the rules' verdict when not enforced (0009)
    # gateway.core.seal: what rollback needs of secrets and binary priors, encrypted (0010)
    sealed: str | None = _text_or_null()  # at the intent: the true undo and prior
    sealed_outcome: str | None = _text_or_null()  # at the outcome: the true state left
    irreversible_reason: str | None = _text_or_null()  # why no undo was kept (0010)
    resend_key: str | None = _text_or_null()  # gateway.core.resend.key_of (0027)


_journal = JournalRow.__table__  # type: ignore[attr-defined]
# SQLite's open intents (PostgreSQL reads ``journal_open``, and has no such index since
# 0024: it named ``state``, so no outcome could be written in place)
Index("ix_journal_intents", _journal.c.at,
      sqlite_where=sql_text("state = 'intent'")).ddl_if(dialect="sqlite")


class OpenIntentRow(SQLModel, table=True):
    """An intent still without outcome, on PostgreSQL: kept by triggers on ``journal``
    (0023), read by the kill switch and recovery instead of the partial index above,
    whose entries outlive their rows there until a vacuum. Empty on SQLite."""

    __tablename__ = "journal_open"

    id: str = Field(sa_type=Text, primary_key=True)
    at: str = _text()
    agent: str = _text()
    upstream: str = _text()
    method: str = _text()
    path: str = _text()
    process: str | None = _text_or_null()


class FreezeRow(SQLModel, table=True):
    """A kill-switch freeze; released ones stay as history (``released_at`` set)."""

    __tablename__ = "freezes"

    id: str = Field(sa_type=Text, primary_key=True)
    scope: str = _text()
    target: str | None = _text_or_null()
    reason: str = _text()
    by: str = _text()
    at: str = _text()
    released_at: str | None = _text_or_null()
    released_by: str | None = _text_or_null()
    release_reason: str | None = _text_or_null()


_freezes = FreezeRow.__table__  # type: ignore[attr-defined]
Index(
    "ux_freezes_active",
    _freezes.c.scope,
    func.coalesce(_freezes.c.target, literal_column("''")),
    unique=True,
    sqlite_where=sql_text("released_at IS NULL"),
    postgresql_where=sql_text("released_at IS NULL"),
)


class KillSwitchRow(SQLModel, table=True):
    """One row (id 1): the kill switch's generation, one more at every engage and
    release, so a process can see with one read whether its freezes are current (0005)."""

    __tablename__ = "killswitch"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    generation: int = Field(sa_type=BigInteger)


class AuditRow(SQLModel, table=True):
    """One link of the audit hash chain. ``seq`` is assigned by the store as
    last + 1, never by a sequence: a rolled-back sequence value would leave a
    gap that ``verify`` reports as tampering."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_at", "at"),)  # the autonomy report's window (0009)

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: str = _text()
    actor: str = _text()
    action: str = _text()
    detail: str = _text()
    prev_hash: str = _text()
    hash: str = _text()


class AuditPendingRow(SQLModel, table=True):
    """An engage's audit record not linked into the chain yet: on PostgreSQL an engage
    does not wait for the chain's lock (``gateway_engage``, migration 0018); the record
    is chained right after its commit, or by the next start or release (0018)."""

    __tablename__ = "audit_pending"

    id: str = Field(sa_type=Text, primary_key=True)  # the freeze's
    at: str = _text()
    actor: str = _text()
    action: str = _text()
    detail: str = _text()
    head: str = _text()  # the canonical text its hash covers, up to the seq (0017)


class ApprovalRow(SQLModel, table=True):
    """One ``HeldCall``: the request exactly as the agent sent it, and its decision.

    The state changes are compare-and-set UPDATEs whose WHERE clause names the
    expected ``status`` (and ``votes``, compared as text: ``codec.votes_text``
    is deterministic), so a transition happens once however many processes try.
    """

    __tablename__ = "approvals"
    __table_args__ = (
        Index("ix_approvals_status_at", "status", "at"),
        Index("ix_approvals_agent_at", "agent", "at"),
        Index("ix_approvals_upstream_at", "upstream", "at"),
        Index("ix_approvals_status_due_at", "status", "due_at"),
        Index("ix_approvals_left_key", "left_key"),
    )

    id: str = Field(sa_type=Text, primary_key=True)
    at: str = _text()
    agent: str = _text()
    upstream: str = _text()
    method: str = _text()
    raw_path: str = _text()
    query: str = _text()
    headers: str = _text()  # JSON list of [name, value]
    body: bytes = Field(sa_type=LargeBinary)
    run: str | None = _text_or_null()
    model: str | None = _text_or_null()
    prompt_version: str | None = _text_or_null()
    tool_version: str | None = _text_or_null()
    rule: str | None = _text_or_null()
    policy_revision: str = _text()
    digest: str = _text()
    required: int
    roles: str | None = _text_or_null()  # JSON list, NULL = any approver role
    operators: str | None = _text_or_null()  # JSON list, NULL = any operator
    expires_at: str | None = _text_or_null()  # NULL = never
    status: str = _text()
    votes: str = _text()  # JSON list of Vote.to_json(), as codec.votes_text writes it
    decided_by: str | None = _text_or_null()
    decided_at: str | None = _text_or_null()
    reason: str | None = _text_or_null()
    lease_until: str | None = _text_or_null()
    response: str | None = _text_or_null()  # JSON
    journal_id: str | None = _text_or_null()
    error: str | None = _text_or_null()
    extra: str = _text()  # JSON object
    due_at: str | None = _text_or_null()  # action: delay: when the gateway runs it (0009)
    sealed: str | None = _text_or_null()  # the exact query, headers and body, sealed (0010)
    sealed_response: str | None = _text_or_null()  # the response unredacted, sealed (0010)
    left_key: str | None = _text_or_null()  # the agent left unanswered: its resend's key (0025)
    left_at: str | None = _text_or_null()  # when it left (0025)


class RollbackPlanRow(SQLModel, table=True):
    """One rollback ``Plan`` without its steps (those are ``RollbackStepRow``)."""

    __tablename__ = "rollback_plans"
    __table_args__ = (Index("ix_rollback_plans_status", "status"),)

    id: str = Field(sa_type=Text, primary_key=True)
    created_at: str = _text()
    by: str = _text()
    selector: str = _text()  # JSON object
    force: bool
    status: str = _text()  # PlanStatus
    irreversible: str = _text()  # JSON list of objects
    skipped: str = _text()  # JSON list of objects
    updated_at: str = _text()


class RollbackStepRow(SQLModel, table=True):
    """One ``Step`` of a rollback plan, keyed by the plan and its order of execution."""

    __tablename__ = "rollback_steps"

    plan_id: str = Field(sa_type=Text, primary_key=True)
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    entry_id: str = _text()
    upstream: str = _text()
    method: str = _text()
    path: str = _text()
    body: str | None = _text_or_null()  # JSON; NULL = no body
    content_type: str = _text()
    target: str = _text()
    expected: str | None = _text_or_null()  # JSON; NULL = unknown (ABSENT is a JSON object)
    volatile: str = _text()  # JSON list of field names
    status: str = _text()  # StepStatus
    detail: str | None = _text_or_null()
    journal_id: str | None = _text_or_null()
    sealed: str | None = _text_or_null()  # the true body and expected state, sealed (0010)
    updated_at: str = _text()


class CheckpointRow(SQLModel, table=True):
    """One signed tree head of the audit log (0014): its note as served and anchored,
    and what each anchor answered (JSON: per anchor, when it last succeeded, its error,
    a witness's cosignature lines, a timestamp token)."""

    __tablename__ = "audit_checkpoints"

    size: int = Field(sa_type=BigInteger, primary_key=True,
                      sa_column_kwargs={"autoincrement": False})
    root: str = _text()  # base64, as in the note
    note: str = _text()
    at: str = _text()
    anchors: str = _text()  # JSON object


class LeaseRow(SQLModel, table=True):
    """A named lease (``plan:<id>``, ``process:<name>``): who holds it and until when
    (0012). Taken and renewed by one upsert (``gateway.store.leases``)."""

    __tablename__ = "leases"

    name: str = Field(sa_type=Text, primary_key=True)
    owner: str = _text()
    expires_at: str = _text()


class TripwireCountRow(SQLModel, table=True):
    """Events of a tripwire window in one time bucket, shared by every process (0012)."""

    __tablename__ = "tripwire_counts"

    name: str = Field(sa_type=Text, primary_key=True)
    bucket: int = Field(sa_type=BigInteger, primary_key=True,
                        sa_column_kwargs={"autoincrement": False})
    events: int = Field(sa_type=BigInteger)
    total: float


class LeftWriteRow(SQLModel, table=True):
    """A write its agent left before the answer, for the resend to rejoin (0026,
    ``gateway.core.resend``): the answer kept redacted, and exactly, sealed."""

    __tablename__ = "left_writes"
    __table_args__ = (Index("ix_left_writes_key", "key", "left_at"),)

    entry_id: str = Field(sa_type=Text, primary_key=True)  # its journal entry
    key: str = _text()
    agent: str = _text()
    left_at: str = _text()
    rejoined_at: str | None = _text_or_null()  # a resend waits on it now
    state: str = _text()  # sending, answered, unknown, not_sent
    response: str | None = _text_or_null()  # JSON, redacted
    sealed_response: str | None = _text_or_null()
