"""SendGrid's signed event webhook: an ECDSA P-256 key per endpoint (issue 13).

Revision ID: 0182
Revises: 0183
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0182"
down_revision: str | Sequence[str] | None = "0183"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.add_column("webhooks", sa.Column("signing_key", sa.LargeBinary(), nullable=True))
    op.add_column("webhooks", sa.Column("public_key", sa.Text(), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("public_key")
        batch.drop_column("signing_key")
