"""Table: events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, JSONType, UTCDateTime
from app.messages.models import AutoIncrement


class EventType(StrEnum):
    """What happened (ARCHITECTURE.md §3)."""

    PROCESSED = "processed"
    DROPPED = "dropped"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    GROUP_UNSUBSCRIBED = "group_unsubscribed"  # opted out of one unsubscribe group
    GROUP_RESUBSCRIBED = "group_resubscribed"
    COMPLAINED = "complained"
    CANCELLED = "cancelled"
    WEBHOOK_DISABLED = "webhook_disabled"
    # A sending domain's required DNS records verified, or stopped verifying (issue 16).
    DOMAIN_VERIFIED = "domain_verified"
    DOMAIN_FAILED = "domain_failed"
    DKIM_ROTATED = "dkim_rotated"  # a new DKIM key verified and signs from now on


class Event(Base):
    """An append-only fact about a message or recipient.

    `id` is assigned at insert; `position` is the feed cursor, assigned after commit in
    commit order by app.events.sequencer, so a reader following it never skips a row that
    committed late (ids of concurrent transactions commit out of order)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_account_id_position", "account_id", "position"),
        Index("uq_events_position", "position", unique=True),
        # Retention deletes events of no message (e.g. a webhook disabled) by age; the rest
        # go with their message.
        Index(
            "ix_events_unowned_created_at",
            "created_at",
            postgresql_where=text("message_id IS NULL"),
            sqlite_where=text("message_id IS NULL"),
        ),
        Index(
            "ix_events_unsequenced",
            "id",
            postgresql_where=text("position IS NULL"),
            sqlite_where=text("position IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True, default=None
    )
    recipient_id: Mapped[str | None] = mapped_column(
        ForeignKey("recipients.id", ondelete="CASCADE"), index=True, default=None
    )
    # 32 on PostgreSQL since "group_unsubscribed"; SQLite ignores lengths and its column, made
    # 16 wide, was left alone (rebuilding the table would copy every event for nothing).
    type: Mapped[str] = mapped_column(String(32).with_variant(String(16), "sqlite"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    position: Mapped[int | None] = mapped_column(BigInteger, default=None)
