"""Data over time (issue 17): the erasures audit table, and when a message's content was
purged (COLUMBA_CONTENT_RETENTION).

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(26),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column(
            "counts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
    )
    op.create_index("ix_erasures_account_id", "erasures", ["account_id"])
    op.add_column("messages", sa.Column("content_purged_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Revert."""
    # A plain DROP COLUMN (SQLite 3.35+ has it): batch mode would rebuild `messages` and lose
    # its expression indexes, which Alembic cannot reflect to recreate.
    op.drop_column("messages", "content_purged_at")
    op.drop_index("ix_erasures_account_id", table_name="erasures")
    op.drop_table("erasures")
