"""Sends: personalisation per recipient, templates, batches, idempotency keys.

Revision ID: 0400
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0400"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["account_id"], ["accounts.id"], name=f"fk_{table}_account_id_accounts", ondelete="CASCADE"
    )


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("batches"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    op.create_index("ix_batches_account_id", "batches", ["account_id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", JSONType, nullable=True),
        sa.Column("response_headers", JSONType, nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("idempotency_keys"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("account_id", "key", name=op.f("uq_idempotency_keys_account_id_key")),
    )
    op.create_index("ix_idempotency_keys_account_id", "idempotency_keys", ["account_id"])
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])

    op.create_table(
        "templates",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("templates"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
    )
    op.create_index("ix_templates_account_id", "templates", ["account_id"])

    op.create_table(
        "template_versions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("template_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("template_versions"),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_versions_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
    )
    op.create_index("ix_template_versions_account_id", "template_versions", ["account_id"])
    op.create_index("ix_template_versions_template_id", "template_versions", ["template_id"])
    op.create_index(
        "uq_template_versions_one_active",
        "template_versions",
        ["template_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )

    op.add_column("messages", sa.Column("template_id", sa.String(length=64), nullable=True))
    op.add_column("messages", sa.Column("template_engine", sa.String(length=16), nullable=True))
    op.add_column("messages", sa.Column("sections", sa.JSON(), nullable=False, server_default="{}"))
    op.add_column("messages", sa.Column("batch_id", sa.String(length=64), nullable=True))
    op.add_column("messages", sa.Column("send_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("asm_group_id", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("settings", JSONType, nullable=False, server_default="{}"))
    op.create_index("ix_messages_batch_id", "messages", ["batch_id"])
    op.add_column("recipients", sa.Column("personalization", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("recipients") as batch_op:
        batch_op.drop_column("personalization")
    op.drop_index("ix_messages_batch_id", table_name="messages")
    with op.batch_alter_table("messages") as batch_op:
        for column in (
            "settings", "asm_group_id", "send_at", "batch_id", "sections", "template_engine",
            "template_id",
        ):  # fmt: skip
            batch_op.drop_column(column)
    op.drop_table("template_versions")
    op.drop_table("templates")
    op.drop_table("idempotency_keys")
    op.drop_table("batches")
