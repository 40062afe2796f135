"""Journal, freezes and the audit chain.

On PostgreSQL the audit table also refuses UPDATE, DELETE and TRUNCATE, so
rewriting history takes a superuser dropping the triggers, not a stray query.

Revision ID: 0001
Revises:
Create Date: 2024-06-01
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _texts(*names: str, nullable: bool = False) -> list[sa.Column[Any]]:
    return [_text(name, nullable) for name in names]


APPEND_ONLY = """
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only: % refused', TG_OP;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("id", sa.Text(), primary_key=True),
        *_texts("at", "request_id", "agent"),
        *_texts("run", "model", "prompt_version", "tool_version", nullable=True),
        *_texts("upstream", "method", "path", "query"),
        _text("rule", nullable=True),
        *_texts("decision", "policy_revision", "request_headers"),
        *_texts("request_body", "request_body_sha256", nullable=True),
        sa.Column("request_body_size", sa.Integer(), nullable=False),
        *_texts("request_content_type", "prior", nullable=True),
        sa.Column("prior_status", sa.Integer(), nullable=True),
        *_texts("capture_path", "undo", nullable=True),
        sa.Column("reversible", sa.Boolean(), nullable=False),
        _text("state"),
        sa.Column("status", sa.Integer(), nullable=True),
        _text("response_headers"),
        *_texts("response_body", "response_body_sha256", nullable=True),
        sa.Column("response_body_size", sa.Integer(), nullable=False),
        _text("error", nullable=True),
        _text("timings"),
        _text("completed_at", nullable=True),
    )
    op.create_index("ix_journal_at", "journal", ["at"])
    op.create_index("ix_journal_agent_at", "journal", ["agent", "at"])
    op.create_index("ix_journal_run", "journal", ["run"])
    op.create_index("ix_journal_upstream_at", "journal", ["upstream", "at"])

    op.create_table(
        "freezes",
        sa.Column("id", sa.Text(), primary_key=True),
        _text("scope"),
        _text("target", nullable=True),
        *_texts("reason", "by", "at"),
        *_texts("released_at", "released_by", "release_reason", nullable=True),
    )
    active = sa.text("released_at IS NULL")
    op.create_index("ux_freezes_active", "freezes", ["scope", sa.text("COALESCE(target, '')")],
                    unique=True, sqlite_where=active, postgresql_where=active)

    op.create_table(
        "audit",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        *_texts("at", "actor", "action", "detail", "prev_hash", "hash"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY)
        op.execute("CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit "
                   "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
        op.execute("CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()")


def downgrade() -> None:
    op.drop_table("audit")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_append_only()")
    op.drop_table("freezes")
    op.drop_table("journal")
