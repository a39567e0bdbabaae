"""Optional Ed25519 DKIM key per domain, for dual signing (RFC 8463).

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ed25519_selector", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("ed25519_private_key", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("ed25519_public_record", sa.Text(), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_column("ed25519_public_record")
        batch_op.drop_column("ed25519_private_key")
        batch_op.drop_column("ed25519_selector")
