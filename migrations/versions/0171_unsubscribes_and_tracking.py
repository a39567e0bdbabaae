"""Unsubscribe groups and their suppressions, tracking settings, first opens and clicks, and
machine opens and clicks in the stats (issue 12).

Revision ID: 0171
Revises: 0161
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0171"
down_revision: str | Sequence[str] | None = "0161"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GROUP_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.DateTime(timezone=True)


def _account() -> sa.Column[str]:
    return sa.Column(
        "account_id",
        sa.String(26),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )


def upgrade() -> None:
    """Apply."""
    # "group_unsubscribed" is 18 characters. SQLite ignores lengths: only PostgreSQL's column
    # changes (a batch rebuild of the events table would copy every event for nothing).
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("events", "type", type_=sa.String(32), existing_nullable=False)
    for metric in ("machine_opens", "machine_clicks"):
        op.add_column(
            "stats_counters",
            sa.Column(metric, sa.Integer(), nullable=False, server_default="0"),
        )
    op.create_table(
        "unsubscribe_groups",
        sa.Column("id", _GROUP_ID, primary_key=True, autoincrement=True),
        _account(),
        sa.Column("name", sa.String(30), nullable=False),
        sa.Column("description", sa.String(100), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", _NOW, nullable=False),
        sa.Column("updated_at", _NOW, nullable=False),
        sa.UniqueConstraint("account_id", "name"),
    )
    op.create_table(
        "group_suppressions",
        sa.Column(
            "group_id",
            _GROUP_ID,
            sa.ForeignKey("unsubscribe_groups.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("email", sa.String(320), primary_key=True),
        _account(),
        sa.Column("created_at", _NOW, nullable=False),
    )
    op.create_table(
        "tracking_settings",
        sa.Column(
            "account_id",
            sa.String(26),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("click_enabled", sa.Boolean(), nullable=False),
        sa.Column("click_enable_text", sa.Boolean(), nullable=False),
        sa.Column("open_enabled", sa.Boolean(), nullable=False),
        sa.Column("subscription_enabled", sa.Boolean(), nullable=False),
        sa.Column("subscription_html_content", sa.Text(), nullable=False),
        sa.Column("subscription_plain_content", sa.Text(), nullable=False),
        sa.Column("subscription_landing", sa.Text(), nullable=False),
        sa.Column("subscription_url", sa.Text(), nullable=False),
        sa.Column("subscription_replace", sa.String(255), nullable=False),
        sa.Column("ga_enabled", sa.Boolean(), nullable=False),
        *(
            sa.Column(name, sa.String(255), nullable=False)
            for name in ("utm_source", "utm_medium", "utm_term", "utm_content", "utm_campaign")
        ),
        sa.Column("list_unsubscribe", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _NOW, nullable=False),
    )
    op.create_table(
        "engagements",
        sa.Column(
            "recipient_id",
            sa.String(26),
            sa.ForeignKey("recipients.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("created_at", _NOW, nullable=False),
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("engagements")
    op.drop_table("tracking_settings")
    op.drop_table("group_suppressions")
    op.drop_table("unsubscribe_groups")
    for metric in ("machine_clicks", "machine_opens"):
        op.drop_column("stats_counters", metric)
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("events", "type", type_=sa.String(16), existing_nullable=False)
