"""Join the branches that issues 3 (0003), 4 (0400) and 5 (0500) grew from 0002.

Revision ID: 0004
Revises: 0003, 0400, 0500
"""

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = ("0003", "0400", "0500")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to do: the branches touch different tables and columns."""


def downgrade() -> None:
    """Nothing to do."""
