"""Baseline: the whole schema in one revision (issue 17).

The migration history (0001, 0101, 0141, 0161, 0171, 0181, 0183, 0182, 0192, 0191, written on
parallel branches and re-chained) was squashed into this revision on 2026-12-06, before any
deployed database existed, so no database is at one of the old revisions. It builds exactly
the schema the old chain built, on PostgreSQL and SQLite alike (checked with pg_dump and
sqlite_master). From now on every schema change is a new revision on top of this one; this
file never changes again.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    op.create_table(
        "mta_sts_policies",
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("policy_id", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("mx", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("max_age", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_mta_sts_policies")),
    )
    op.create_table(
        "tls_report_counts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("policy_domain", sa.String(length=253), nullable=False),
        sa.Column("policy_type", sa.String(length=16), nullable=False),
        sa.Column(
            "policy_string",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("mx_host", sa.String(length=253), nullable=False),
        sa.Column("result_type", sa.String(length=40), nullable=False),
        sa.Column("receiving_ip", sa.String(length=45), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tls_report_counts")),
        sa.UniqueConstraint(
            "day",
            "policy_domain",
            "policy_type",
            "mx_host",
            "result_type",
            "receiving_ip",
            name=op.f(
                "uq_tls_report_counts_day_policy_domain_policy_type_mx_host_result_type_receiving_ip"
            ),
        ),
    )
    op.create_table(
        "tls_reports",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("policy_domain", sa.String(length=253), nullable=False),
        sa.Column("report_id", sa.String(length=128), nullable=False),
        sa.Column(
            "report", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "delivered_to", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "errors", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tls_reports")),
        sa.UniqueConstraint("day", "policy_domain", name=op.f("uq_tls_reports_day_policy_domain")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "scopes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("smtp_messages_per_minute", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_api_keys_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_account_id"), "api_keys", ["account_id"], unique=False)
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_batches_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    op.create_index(op.f("ix_batches_account_id"), "batches", ["account_id"], unique=False)
    op.create_table(
        "domains",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("dkim_selector", sa.String(length=63), nullable=False),
        sa.Column("dkim_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("dkim_public_record", sa.Text(), nullable=False),
        sa.Column("ed25519_selector", sa.String(length=63), nullable=True),
        sa.Column("ed25519_private_key", sa.LargeBinary(), nullable=True),
        sa.Column("ed25519_public_record", sa.Text(), nullable=True),
        sa.Column("bounce_domain", sa.String(length=253), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dkim_activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "last_check", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_domains_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_domains_account_id_name")),
    )
    op.create_index(op.f("ix_domains_account_id"), "domains", ["account_id"], unique=False)
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column(
            "response_body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "response_headers",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_idempotency_keys_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("account_id", "key", name=op.f("uq_idempotency_keys_account_id_key")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_account_id"), "idempotency_keys", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"], unique=False
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=True),
        sa.Column("recipient_id", sa.String(length=26), nullable=True),
        sa.Column("message_id", sa.String(length=26), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("verp", sa.String(length=320), nullable=False),
        sa.Column("envelope_sender", sa.String(length=320), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detector", sa.String(length=32), nullable=False),
        sa.Column("bounce_type", sa.String(length=16), nullable=True),
        sa.Column("bounce_classification", sa.String(length=32), nullable=True),
        sa.Column("classification_rule", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("feedback_type", sa.String(length=32), nullable=True),
        sa.Column("reporting_mta", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("raw_truncated", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_inbound_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
    )
    op.create_index(
        "ix_inbound_messages_account_id_id", "inbound_messages", ["account_id", "id"], unique=False
    )
    op.create_index(
        "ix_inbound_messages_received_at", "inbound_messages", ["received_at"], unique=False
    )
    op.create_table(
        "stats_counters",
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("category", sa.String(length=255), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocks", sa.Integer(), nullable=False),
        sa.Column("bounce_drops", sa.Integer(), nullable=False),
        sa.Column("bounces", sa.Integer(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("deferred", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("invalid_emails", sa.Integer(), nullable=False),
        sa.Column("opens", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("spam_report_drops", sa.Integer(), nullable=False),
        sa.Column("spam_reports", sa.Integer(), nullable=False),
        sa.Column("unique_clicks", sa.Integer(), nullable=False),
        sa.Column("unique_opens", sa.Integer(), nullable=False),
        sa.Column("unsubscribe_drops", sa.Integer(), nullable=False),
        sa.Column("unsubscribes", sa.Integer(), nullable=False),
        sa.Column("drops", sa.Integer(), nullable=False),
        sa.Column("machine_opens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("machine_clicks", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_stats_counters_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "category", "hour", "shard", name=op.f("pk_stats_counters")
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "suppressions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_suppressions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint(
            "account_id", "email", "type", name=op.f("uq_suppressions_account_id_email_type")
        ),
    )
    op.create_index(
        op.f("ix_suppressions_account_id"), "suppressions", ["account_id"], unique=False
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_templates_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
    )
    op.create_index(op.f("ix_templates_account_id"), "templates", ["account_id"], unique=False)
    op.create_table(
        "tracking_settings",
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("click_enabled", sa.Boolean(), nullable=False),
        sa.Column("click_enable_text", sa.Boolean(), nullable=False),
        sa.Column("open_enabled", sa.Boolean(), nullable=False),
        sa.Column("subscription_enabled", sa.Boolean(), nullable=False),
        sa.Column("subscription_html_content", sa.Text(), nullable=False),
        sa.Column("subscription_plain_content", sa.Text(), nullable=False),
        sa.Column("subscription_landing", sa.Text(), nullable=False),
        sa.Column("subscription_url", sa.Text(), nullable=False),
        sa.Column("subscription_replace", sa.String(length=255), nullable=False),
        sa.Column("ga_enabled", sa.Boolean(), nullable=False),
        sa.Column("utm_source", sa.String(length=255), nullable=False),
        sa.Column("utm_medium", sa.String(length=255), nullable=False),
        sa.Column("utm_term", sa.String(length=255), nullable=False),
        sa.Column("utm_content", sa.String(length=255), nullable=False),
        sa.Column("utm_campaign", sa.String(length=255), nullable=False),
        sa.Column("list_unsubscribe", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_tracking_settings_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_tracking_settings")),
    )
    op.create_table(
        "unsubscribe_groups",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=30), nullable=False),
        sa.Column("description", sa.String(length=100), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "account_id", "name", name=op.f("uq_unsubscribe_groups_account_id_name")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_unsubscribe_groups_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unsubscribe_groups")),
    )
    op.create_index(
        op.f("ix_unsubscribe_groups_account_id"), "unsubscribe_groups", ["account_id"], unique=False
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column(
            "event_types", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret", sa.LargeBinary(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.String(length=26), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signing_key", sa.LargeBinary(), nullable=True),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_webhooks_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_index(op.f("ix_webhooks_account_id"), "webhooks", ["account_id"], unique=False)
    op.create_table(
        "domain_keys",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("domain_id", sa.String(length=26), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=True),
        sa.Column("public_record", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_domain_keys_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_keys")),
    )
    op.create_index(op.f("ix_domain_keys_domain_id"), "domain_keys", ["domain_id"], unique=False)
    op.create_table(
        "group_suppressions",
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["unsubscribe_groups.id"],
            name=op.f("fk_group_suppressions_group_id_unsubscribe_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_group_suppressions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "email", name=op.f("pk_group_suppressions")),
    )
    op.create_index(
        op.f("ix_group_suppressions_account_id"), "group_suppressions", ["account_id"], unique=False
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("api_key_id", sa.String(length=26), nullable=True),
        sa.Column("domain_id", sa.String(length=26), nullable=False),
        sa.Column("from_email", sa.String(length=320), nullable=False),
        sa.Column("from_name", sa.String(length=256), nullable=True),
        sa.Column(
            "to_header", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "cc_header", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "reply_to", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column(
            "headers", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "categories", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "custom_args", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("message_id_header", sa.String(length=255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("template_id", sa.String(length=64), nullable=True),
        sa.Column("template_engine", sa.String(length=16), nullable=True),
        sa.Column("sections", sa.JSON(), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("asm_group_id", sa.Integer(), nullable=True),
        sa.Column(
            "settings", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("raw_mime", sa.LargeBinary(), nullable=True),
        sa.Column("template_data", sa.JSON(), nullable=True),
        sa.Column(
            "alternatives", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_messages_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_messages_domain_id_domains"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("message_id_header", name=op.f("uq_messages_message_id_header")),
    )
    op.create_index(op.f("ix_messages_batch_id"), "messages", ["batch_id"], unique=False)
    op.create_index("ix_messages_created_at", "messages", ["created_at"], unique=False)
    op.create_index("ix_messages_search", "messages", ["account_id", "id"], unique=False)
    op.create_index(
        "ix_messages_search_from",
        "messages",
        ["account_id", sa.literal_column("lower(from_email)"), "id"],
        unique=False,
    )
    op.create_index(
        "ix_messages_search_subject",
        "messages",
        [
            "account_id",
            # 200: app.messages.models.SUBJECT_INDEXED, the characters the prefix index holds
            sa.literal_column("lower(substr(subject, 1, 200))").label("subject_head"),
            "id",
        ],
        unique=False,
        postgresql_ops={"subject_head": "text_pattern_ops"},
    )
    op.create_index(
        "ix_messages_search_template",
        "messages",
        ["account_id", "template_id", "id"],
        unique=False,
        postgresql_where=sa.text("template_id IS NOT NULL"),
        sqlite_where=sa.text("template_id IS NOT NULL"),
    )
    op.create_index(
        "ix_messages_search_batch",
        "messages",
        ["account_id", "batch_id", "id"],
        unique=False,
        postgresql_where=sa.text("batch_id IS NOT NULL"),
        sqlite_where=sa.text("batch_id IS NOT NULL"),
    )
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
        sa.Column(
            "generate_plain_content", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column("editor", sa.String(length=16), nullable=True),
        sa.Column("test_data", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_template_versions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_versions_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
    )
    op.create_index(
        op.f("ix_template_versions_account_id"), "template_versions", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_template_versions_template_id"), "template_versions", ["template_id"], unique=False
    )
    op.create_index(
        "uq_template_versions_one_active",
        "template_versions",
        ["template_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "webhook_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("webhook_id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_webhook_batches_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_batches_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_batches")),
    )
    op.create_index(
        "ix_webhook_batches_completed_at", "webhook_batches", ["completed_at"], unique=False
    )
    op.create_index(
        "ix_webhook_batches_due", "webhook_batches", ["state", "next_attempt_at"], unique=False
    )
    op.create_index(
        "ix_webhook_batches_webhook_id_state",
        "webhook_batches",
        ["webhook_id", "state"],
        unique=False,
    )
    op.create_table(
        "message_attachments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=26), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("content_id", sa.String(length=255), nullable=True),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_attachments_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_attachments")),
    )
    op.create_index(
        op.f("ix_message_attachments_message_id"),
        "message_attachments",
        ["message_id"],
        unique=False,
    )
    op.create_table(
        "message_tags",
        sa.Column("message_id", sa.String(length=26), nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_tags_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_message_tags_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "tag", name=op.f("pk_message_tags")),
    )
    op.create_index(
        "ix_message_tags_search", "message_tags", ["account_id", "tag", "message_id"], unique=False
    )
    op.create_table(
        "recipients",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("message_id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("kind", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.String(length=26), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_code", sa.Integer(), nullable=True),
        sa.Column("last_enhanced_code", sa.String(length=16), nullable=True),
        sa.Column("last_response", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("personalization", sa.JSON(), nullable=True),
        sa.Column("lease_expiries", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_recipients_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_recipients_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipients")),
    )
    op.create_index("ix_recipients_due", "recipients", ["status", "next_attempt_at"], unique=False)
    op.create_index(op.f("ix_recipients_lease_token"), "recipients", ["lease_token"], unique=False)
    op.create_index(op.f("ix_recipients_message_id"), "recipients", ["message_id"], unique=False)
    op.create_index(
        "ix_recipients_search_email",
        "recipients",
        ["account_id", sa.literal_column("lower(email)"), "message_id"],
        unique=False,
    )
    op.create_index(
        "ix_recipients_search_domain",
        "recipients",
        ["account_id", "domain", "message_id"],
        unique=False,
    )
    op.create_index(
        "ix_recipients_search_status",
        "recipients",
        ["account_id", "status", "message_id"],
        unique=False,
    )
    op.create_table(
        "smtp_submissions",
        sa.Column("message_id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("api_key_id", sa.String(length=26), nullable=True),
        sa.Column("client_ip", sa.String(length=45), nullable=False),
        sa.Column("helo", sa.String(length=255), nullable=False),
        sa.Column("tls_version", sa.String(length=16), nullable=True),
        sa.Column("envelope_from", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_smtp_submissions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_smtp_submissions_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_smtp_submissions_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_smtp_submissions")),
    )
    op.create_index(
        op.f("ix_smtp_submissions_account_id"), "smtp_submissions", ["account_id"], unique=False
    )
    op.create_table(
        "webhook_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("webhook_id", sa.String(length=26), nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["webhook_batches.id"],
            name=op.f("fk_webhook_attempts_batch_id_webhook_batches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_attempts_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(
        op.f("ix_webhook_attempts_batch_id"), "webhook_attempts", ["batch_id"], unique=False
    )
    op.create_index(
        "ix_webhook_attempts_webhook_id_id", "webhook_attempts", ["webhook_id", "id"], unique=False
    )
    op.create_table(
        "attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("recipient_id", sa.String(length=26), nullable=False),
        sa.Column("message_id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("mx_host", sa.String(length=253), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("tls_version", sa.String(length=16), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("enhanced_code", sa.String(length=16), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("tls_cipher", sa.String(length=64), nullable=True),
        sa.Column("tls_verified", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_attempts_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_attempts_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_attempts_recipient_id_recipients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
    )
    op.create_index(op.f("ix_attempts_message_id"), "attempts", ["message_id"], unique=False)
    op.create_index(op.f("ix_attempts_recipient_id"), "attempts", ["recipient_id"], unique=False)
    op.create_table(
        "engagements",
        sa.Column("recipient_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_engagements_recipient_id_recipients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("recipient_id", "kind", name=op.f("pk_engagements")),
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("message_id", sa.String(length=26), nullable=True),
        sa.Column("recipient_id", sa.String(length=26), nullable=True),
        sa.Column(
            "type",
            sa.String(length=32).with_variant(sa.String(length=16), "sqlite"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_events_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_events_recipient_id_recipients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_account_id"), "events", ["account_id"], unique=False)
    op.create_index(
        "ix_events_account_id_position", "events", ["account_id", "position"], unique=False
    )
    op.create_index(op.f("ix_events_message_id"), "events", ["message_id"], unique=False)
    op.create_index(op.f("ix_events_recipient_id"), "events", ["recipient_id"], unique=False)
    op.create_index(
        "ix_events_unowned_created_at",
        "events",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("message_id IS NULL"),
        sqlite_where=sa.text("message_id IS NULL"),
    )
    op.create_index(
        "ix_events_unsequenced",
        "events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("position IS NULL"),
        sqlite_where=sa.text("position IS NULL"),
    )
    op.create_index("uq_events_position", "events", ["position"], unique=True)
    op.create_table(
        "inbound_reports",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("recipient_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("reporter", sa.String(length=255), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_inbound_reports_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name=op.f("fk_inbound_reports_recipient_id_recipients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_reports")),
        sa.UniqueConstraint(
            "recipient_id", "kind", name=op.f("uq_inbound_reports_recipient_id_kind")
        ),
    )
    op.create_index(
        op.f("ix_inbound_reports_account_id"), "inbound_reports", ["account_id"], unique=False
    )
    op.create_table(
        "webhook_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("webhook_id", sa.String(length=26), nullable=False),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["webhook_batches.id"],
            name=op.f("fk_webhook_outbox_batch_id_webhook_batches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.id"],
            name=op.f("fk_webhook_outbox_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_outbox_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_outbox")),
    )
    op.create_index(
        op.f("ix_webhook_outbox_batch_id"), "webhook_outbox", ["batch_id"], unique=False
    )
    op.create_index(
        op.f("ix_webhook_outbox_event_id"), "webhook_outbox", ["event_id"], unique=False
    )
    op.create_index(
        "ix_webhook_outbox_pending",
        "webhook_outbox",
        ["webhook_id", "id"],
        unique=False,
        postgresql_where=sa.text("batch_id IS NULL"),
        sqlite_where=sa.text("batch_id IS NULL"),
    )


# Every table, in the order upgrade() creates them: each after the tables it refers to.
TABLES = (
    "accounts",
    "mta_sts_policies",
    "tls_report_counts",
    "tls_reports",
    "api_keys",
    "batches",
    "domains",
    "idempotency_keys",
    "inbound_messages",
    "stats_counters",
    "suppressions",
    "templates",
    "tracking_settings",
    "unsubscribe_groups",
    "webhooks",
    "domain_keys",
    "group_suppressions",
    "messages",
    "template_versions",
    "webhook_batches",
    "message_attachments",
    "message_tags",
    "recipients",
    "smtp_submissions",
    "webhook_attempts",
    "attempts",
    "engagements",
    "events",
    "inbound_reports",
    "webhook_outbox",
)


def downgrade() -> None:
    """Drop every table, children before parents; their indexes and sequences go with them."""
    for table in reversed(TABLES):
        op.drop_table(table)
