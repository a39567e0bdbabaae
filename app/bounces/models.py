"""Tables: inbound_reports (one per recipient and kind), inbound_messages (every message)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime
from app.core.ids import new_id
from app.messages.models import AutoIncrement


class ReportKind(StrEnum):
    """What an inbound report says about a recipient."""

    BOUNCE = "bounce"  # RFC 3464 DSN, Action: failed
    COMPLAINT = "complaint"  # RFC 5965 ARF feedback report
    UNSUBSCRIBE = "unsubscribe"  # a mailto List-Unsubscribe request


class InboundReport(Base):
    """A bounce or complaint received for a recipient; one per recipient and kind, so
    repeated reports (FBLs and MTAs resend) produce one event (CHECKLIST 29)."""

    __tablename__ = "inbound_reports"
    __table_args__ = (UniqueConstraint("recipient_id", "kind"),)

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    recipient_id: Mapped[str] = mapped_column(ForeignKey("recipients.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(16), default=None)
    diagnostic: Mapped[str | None] = mapped_column(Text, default=None)
    reporter: Mapped[str | None] = mapped_column(String(255), default=None)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class InboundMessage(Base):
    """Every message `columba inbound` accepted, one row per VERP address it was sent to:
    the raw message (size-capped) and what was concluded, kept for COLUMBA_RETENTION."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("ix_inbound_messages_account_id_id", "account_id", "id"),
        Index("ix_inbound_messages_received_at", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    # Null when the recipient the VERP address names no longer exists (retention, deletion).
    account_id: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), default=None
    )
    # References, not foreign keys: the message may be purged before this row is.
    recipient_id: Mapped[str | None] = mapped_column(String(26), default=None)
    message_id: Mapped[str | None] = mapped_column(String(26), default=None)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    verp: Mapped[str] = mapped_column(String(320))
    envelope_sender: Mapped[str] = mapped_column(String(320), default="")
    outcome: Mapped[str] = mapped_column(String(16))
    detector: Mapped[str] = mapped_column(String(32))
    bounce_type: Mapped[str | None] = mapped_column(String(16), default=None)
    bounce_classification: Mapped[str | None] = mapped_column(String(32), default=None)
    classification_rule: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str | None] = mapped_column(String(16), default=None)
    diagnostic: Mapped[str | None] = mapped_column(Text, default=None)
    feedback_type: Mapped[str | None] = mapped_column(String(32), default=None)
    reporting_mta: Mapped[str | None] = mapped_column(String(255), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    recipients: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    events: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    subject: Mapped[str] = mapped_column(String(500), default="")
    sender: Mapped[str | None] = mapped_column(String(255), default=None)
    size: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    raw_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
