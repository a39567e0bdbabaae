"""Join the SMTP submission branch (0600) with the main line (0004).

Revision ID: 0005
Revises: 0004, 0600
"""

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | Sequence[str] | None = ("0004", "0600")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to do: the branches touch different tables and columns."""


def downgrade() -> None:
    """Nothing to do."""
