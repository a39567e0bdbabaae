"""Observability (issue 15): the request id (HTTP X-Request-Id or SMTP session) that accepted
each message, so that its delivery logs and events name it.

Revision ID: 0192
Revises: 0182
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0192"
down_revision: str | Sequence[str] | None = "0182"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.add_column("messages", sa.Column("request_id", sa.String(64)))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("request_id")
