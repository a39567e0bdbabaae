"""Content types beside text/plain and text/html (a meeting invitation's text/calendar): kept
with the message, in the order given, and sent as further alternatives (issue 13).

Revision ID: 0183
Revises: 0181
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0183"
down_revision: str | Sequence[str] | None = "0181"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Apply."""
    op.add_column("messages", sa.Column("alternatives", _JSON))


def downgrade() -> None:
    """Revert."""
    op.drop_column("messages", "alternatives")
