"""Activity search (issue 15): an index per filter, each ending in the message id, and
message_tags for categories and custom_args (app.messages.search).

Revision ID: 0191
Revises: 0183
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0191"
down_revision: str | Sequence[str] | None = "0183"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUBJECT_INDEXED = 200  # app.messages.models.SUBJECT_INDEXED


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "message_tags",
        sa.Column(
            "message_id",
            sa.String(26),
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(255), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(26),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.create_index("ix_message_tags_search", "message_tags", ["account_id", "tag", "message_id"])
    # The search indexes lead with account_id: the single-column ones have nothing left to do.
    op.drop_index("ix_messages_account_id", table_name="messages")
    op.drop_index("ix_recipients_account_id", table_name="recipients")
    op.create_index("ix_messages_search", "messages", ["account_id", "id"])
    op.create_index(
        "ix_messages_search_from", "messages", ["account_id", sa.text("lower(from_email)"), "id"]
    )
    op.create_index(
        "ix_messages_search_subject",
        "messages",
        ["account_id", sa.text(_subject_head()), "id"],
    )
    for column in ("template_id", "batch_id"):
        op.create_index(
            f"ix_messages_search_{column.removesuffix('_id')}",
            "messages",
            ["account_id", column, "id"],
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
        )
    op.create_index(
        "ix_recipients_search_email",
        "recipients",
        ["account_id", sa.text("lower(email)"), "message_id"],
    )
    for column in ("domain", "status"):
        op.create_index(
            f"ix_recipients_search_{column}", "recipients", ["account_id", column, "message_id"]
        )


def _subject_head() -> str:
    """The subject prefix index's expression (text_pattern_ops on PostgreSQL)."""
    expression = f"lower(substr(subject, 1, {SUBJECT_INDEXED}))"
    if op.get_bind().dialect.name == "postgresql":
        return expression + " text_pattern_ops"
    return expression


def downgrade() -> None:
    """Revert."""
    for name in ("email", "domain", "status"):
        op.drop_index(f"ix_recipients_search_{name}", table_name="recipients")
    for name in ("", "_from", "_subject", "_template", "_batch"):
        op.drop_index(f"ix_messages_search{name}", table_name="messages")
    op.create_index("ix_recipients_account_id", "recipients", ["account_id"])
    op.create_index("ix_messages_account_id", "messages", ["account_id"])
    op.drop_index("ix_message_tags_search", table_name="message_tags")
    op.drop_table("message_tags")
