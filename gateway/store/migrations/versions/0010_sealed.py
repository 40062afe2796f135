"""Sealed values: what rollback and approvals need of secrets, encrypted at rest.

``journal.sealed`` (written with the intent) and ``journal.sealed_outcome``
(with the outcome) hold the true undo, prior and state left when redaction
changed them, or a binary prior; ``approvals.sealed`` the held call's exact
query, headers and body (their own columns now hold them redacted) and
``approvals.sealed_response`` the executed call's response (``response``
holds it redacted);
``rollback_steps.sealed`` a step's true body and expected state.
``journal.irreversible_reason`` says why a write has no undo (a prior over
``journal_body_limit``). All nullable: ``gateway_journal_intents`` (0005)
reads its batch as the ``journal`` row type, so it takes the new columns as
they are.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("journal", sa.Column("sealed", sa.Text(), nullable=True))
    op.add_column("journal", sa.Column("sealed_outcome", sa.Text(), nullable=True))
    op.add_column("journal", sa.Column("irreversible_reason", sa.Text(), nullable=True))
    op.add_column("approvals", sa.Column("sealed", sa.Text(), nullable=True))
    op.add_column("approvals", sa.Column("sealed_response", sa.Text(), nullable=True))
    op.add_column("rollback_steps", sa.Column("sealed", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollback_steps") as batch:
        batch.drop_column("sealed")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("sealed_response")
        batch.drop_column("sealed")
    with op.batch_alter_table("journal") as batch:
        batch.drop_column("irreversible_reason")
        batch.drop_column("sealed_outcome")
        batch.drop_column("sealed")
