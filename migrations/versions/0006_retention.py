"""Indexes for retention: messages and finished webhook batches by age, and events that
belong to no message.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the three indexes."""
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_index(
        "ix_events_unowned_created_at",
        "events",
        ["created_at"],
        postgresql_where=sa.text("message_id IS NULL"),
        sqlite_where=sa.text("message_id IS NULL"),
    )
    op.create_index("ix_webhook_batches_completed_at", "webhook_batches", ["completed_at"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_webhook_batches_completed_at", table_name="webhook_batches")
    op.drop_index("ix_events_unowned_created_at", table_name="events")
    op.drop_index("ix_messages_created_at", table_name="messages")
