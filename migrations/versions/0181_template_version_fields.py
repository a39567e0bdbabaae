"""SendGrid's template version fields (issue 13): generate_plain_content, editor, test_data.

Legacy templates need no column of their own: their engine is "legacy".

Revision ID: 0181
Revises: 0171
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0181"
down_revision: str | Sequence[str] | None = "0171"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.add_column(
        "template_versions",
        sa.Column(
            "generate_plain_content", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )
    op.add_column("template_versions", sa.Column("editor", sa.String(16)))
    op.add_column("template_versions", sa.Column("test_data", sa.Text()))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("template_versions") as batch:
        batch.drop_column("test_data")
        batch.drop_column("editor")
        batch.drop_column("generate_plain_content")
