"""Table: inbound_reports."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime
from app.messages.models import AutoIncrement


class ReportKind(StrEnum):
    """What an inbound report says about a recipient."""

    BOUNCE = "bounce"  # RFC 3464 DSN, Action: failed
    COMPLAINT = "complaint"  # RFC 5965 ARF feedback report


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
