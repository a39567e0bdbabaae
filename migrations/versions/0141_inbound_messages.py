"""Every message the inbound listener receives is kept with what was concluded (issue 14).

Revision ID: 0141
Revises: 0101
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0141"
down_revision: str | Sequence[str] | None = "0101"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=True),
        sa.Column("recipient_id", sa.String(length=26), nullable=True),
        sa.Column("message_id", sa.String(length=26), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("verp", sa.String(length=320), nullable=False),
        sa.Column("envelope_sender", sa.String(length=320), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detector", sa.String(length=32), nullable=False),
        sa.Column("bounce_type", sa.String(length=16), nullable=True),
        sa.Column("bounce_classification", sa.String(length=32), nullable=True),
        sa.Column("classification_rule", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("feedback_type", sa.String(length=32), nullable=True),
        sa.Column("reporting_mta", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("raw_truncated", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_inbound_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
    )
    op.create_index(
        "ix_inbound_messages_account_id_id", "inbound_messages", ["account_id", "id"], unique=False
    )
    op.create_index(
        "ix_inbound_messages_received_at", "inbound_messages", ["received_at"], unique=False
    )


def downgrade() -> None:
    """Revert."""
    op.drop_index("ix_inbound_messages_received_at", table_name="inbound_messages")
    op.drop_index("ix_inbound_messages_account_id_id", table_name="inbound_messages")
    op.drop_table("inbound_messages")
