"""Recipients count the leases that ran out on them (poison recipients); messages keep the
template data their recipients share, once (issue 10, items 1 and 4).

Revision ID: 0101
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0101"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.add_column(
        "recipients",
        sa.Column("lease_expiries", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("messages", sa.Column("template_data", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("template_data")
    with op.batch_alter_table("recipients") as batch:
        batch.drop_column("lease_expiries")
