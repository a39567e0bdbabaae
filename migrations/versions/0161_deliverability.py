"""Deliverability (issue 16): the last DNS check of each domain, DKIM keys in rotation, TLS
details of every attempt, cached MTA-STS policies and TLS-RPT counters and reports.

Revision ID: 0161
Revises: 0101
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0161"
down_revision: str | Sequence[str] | None = "0141"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Apply."""
    op.add_column("domains", sa.Column("dkim_activated_at", sa.DateTime(timezone=True)))
    op.add_column("domains", sa.Column("last_checked_at", sa.DateTime(timezone=True)))
    op.add_column("domains", sa.Column("last_check", _JSON))
    op.add_column("attempts", sa.Column("tls_cipher", sa.String(64)))
    op.add_column("attempts", sa.Column("tls_verified", sa.Boolean()))
    op.create_table(
        "domain_keys",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column(
            "domain_id",
            sa.String(26),
            sa.ForeignKey("domains.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("selector", sa.String(63), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("private_key", sa.LargeBinary()),
        sa.Column("public_record", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retire_at", sa.DateTime(timezone=True)),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_domain_keys_domain_id", "domain_keys", ["domain_id"])
    op.create_table(
        "mta_sts_policies",
        sa.Column("domain", sa.String(253), primary_key=True),
        sa.Column("policy_id", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("mx", _JSON, nullable=False),
        sa.Column("max_age", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tls_report_counts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("policy_domain", sa.String(253), nullable=False),
        sa.Column("policy_type", sa.String(16), nullable=False),
        sa.Column("policy_string", _JSON, nullable=False),
        sa.Column("mx_host", sa.String(253), nullable=False),
        sa.Column("result_type", sa.String(40), nullable=False),
        sa.Column("receiving_ip", sa.String(45), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.UniqueConstraint(
            "day", "policy_domain", "policy_type", "mx_host", "result_type", "receiving_ip"
        ),
    )
    op.create_table(
        "tls_reports",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("policy_domain", sa.String(253), nullable=False),
        sa.Column("report_id", sa.String(128), nullable=False),
        sa.Column("report", _JSON, nullable=False),
        sa.Column("delivered_to", _JSON, nullable=False),
        sa.Column("errors", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("day", "policy_domain"),
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("tls_reports")
    op.drop_table("tls_report_counts")
    op.drop_table("mta_sts_policies")
    op.drop_index("ix_domain_keys_domain_id", table_name="domain_keys")
    op.drop_table("domain_keys")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("tls_verified")
        batch.drop_column("tls_cipher")
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("last_check")
        batch.drop_column("last_checked_at")
        batch.drop_column("dkim_activated_at")
