"""The SQL tables behind ``SqlStore``.

Types are kept plain so one schema serves SQLite and PostgreSQL alike: JSON
is text (``json.dumps``), instants are fixed-width ISO-8601 UTC text from
``gateway.core.model.iso`` (so text order is time order), flags are
booleans. The Alembic migrations in ``migrations/`` own the schema; these
classes mirror it for queries, and ``tests/store`` checks the two agree.
An ``approvals`` table belongs here too, with a migration of its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index, Text, func, literal_column
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


class AuditRow(SQLModel, table=True):
    """One link of the audit hash chain. ``seq`` is assigned by the store as
    last + 1, never by a sequence: a rolled-back sequence value would leave a
    gap that ``verify`` reports as tampering."""

    __tablename__ = "audit"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: str = _text()
    actor: str = _text()
    action: str = _text()
    detail: str = _text()
    prev_hash: str = _text()
    hash: str = _text()
