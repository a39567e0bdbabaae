"""SMTP submission: raw MIME on messages, a per-key SMTP rate, the smtp_submissions table.

Revision ID: 0600
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0600"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    # Plain ADD COLUMN (SQLite supports it): batch mode would rebuild messages, and dropping the
    # old table with foreign keys on would cascade into recipients.
    op.add_column("messages", sa.Column("raw_mime", sa.LargeBinary(), nullable=True))
    op.add_column("api_keys", sa.Column("smtp_messages_per_minute", sa.Integer(), nullable=True))
    op.create_table(
        "smtp_submissions",
        sa.Column("message_id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("api_key_id", sa.String(length=26), nullable=True),
        sa.Column("client_ip", sa.String(length=45), nullable=False),
        sa.Column("helo", sa.String(length=255), nullable=False),
        sa.Column("tls_version", sa.String(length=16), nullable=True),
        sa.Column("envelope_from", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_smtp_submissions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_smtp_submissions_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_smtp_submissions_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_smtp_submissions")),
    )
    op.create_index("ix_smtp_submissions_account_id", "smtp_submissions", ["account_id"])


def downgrade() -> None:
    """Revert."""
    op.drop_index("ix_smtp_submissions_account_id", table_name="smtp_submissions")
    op.drop_table("smtp_submissions")
    # ALTER TABLE … DROP COLUMN works on PostgreSQL and SQLite ≥ 3.35 without a rebuild.
    op.execute("ALTER TABLE api_keys DROP COLUMN smtp_messages_per_minute")
    op.execute("ALTER TABLE messages DROP COLUMN raw_mime")
