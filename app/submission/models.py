"""Table: smtp_submissions, the SMTP side of a message accepted by `columba smtp`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime


class SmtpSubmission(Base):
    """Who handed a message over SMTP, from where and how (the message itself is
    `messages.raw_mime`); what Received says, queryable."""

    __tablename__ = "smtp_submissions"

    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), default=None
    )
    client_ip: Mapped[str] = mapped_column(String(45))
    helo: Mapped[str] = mapped_column(String(255))
    tls_version: Mapped[str | None] = mapped_column(String(16), default=None)
    envelope_from: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
