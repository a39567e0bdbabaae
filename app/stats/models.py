"""Table: stats_counters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime

# SendGrid's metric names (tsg_stats_v3.yaml), then `drops`: every dropped recipient, which
# SendGrid's own list splits by reason and does not total.
SENDGRID_METRICS = (
    "blocks",
    "bounce_drops",
    "bounces",
    "clicks",
    "deferred",
    "delivered",
    "invalid_emails",
    "opens",
    "processed",
    "requests",
    "spam_report_drops",
    "spam_reports",
    "unique_clicks",
    "unique_opens",
    "unsubscribe_drops",
    "unsubscribes",
)
# Columba's own, beside SendGrid's: every drop, and opens and clicks made by machines (Apple
# Mail Privacy Protection's proxy, link scanners), counted apart from people's.
METRICS = (*SENDGRID_METRICS, "drops", "machine_opens", "machine_clicks")
ALL_CATEGORIES = ""  # the category of the row that counts every message


class StatsCounter(Base):
    """The metrics of one account in one UTC hour for one category ('' = all mail).

    Written by app.events.service.record() in the transaction that writes the events."""

    __tablename__ = "stats_counters"
    # SQLite: the primary key is the table's order, so a range of hours is read contiguously.
    __table_args__ = ({"sqlite_with_rowid": False},)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(String(255), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)  # see counters.SHARDS
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    blocks: Mapped[int] = mapped_column(Integer, default=0)
    bounce_drops: Mapped[int] = mapped_column(Integer, default=0)
    bounces: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    deferred: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    invalid_emails: Mapped[int] = mapped_column(Integer, default=0)
    opens: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    spam_report_drops: Mapped[int] = mapped_column(Integer, default=0)
    spam_reports: Mapped[int] = mapped_column(Integer, default=0)
    unique_clicks: Mapped[int] = mapped_column(Integer, default=0)
    unique_opens: Mapped[int] = mapped_column(Integer, default=0)
    unsubscribe_drops: Mapped[int] = mapped_column(Integer, default=0)
    unsubscribes: Mapped[int] = mapped_column(Integer, default=0)
    drops: Mapped[int] = mapped_column(Integer, default=0)
    # The two metrics added later (issue 12) have a server default: the column was added to
    # tables that had rows, and the baseline migration keeps the schema that made.
    machine_opens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    machine_clicks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
