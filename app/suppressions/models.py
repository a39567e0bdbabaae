"""Table: suppressions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime
from app.core.ids import new_id


class SuppressionType(StrEnum):
    """Why an address is suppressed."""

    BOUNCE = "bounce"  # a hard bounce
    COMPLAINT = "complaint"  # a spam report (ARF)
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"  # added through the API
    INVALID = "invalid"  # the address or its domain does not exist (5.1.2, 5.1.10)
    BLOCK = "block"  # a policy rejection: listed, as SendGrid lists blocks, but not suppressing

    @property
    def suppresses(self) -> bool:
        """Whether sends to an address of this type are dropped."""
        return self is not SuppressionType.BLOCK


class Suppression(Base):
    """An address the account's sends are dropped for, until the entry is deleted."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("account_id", "email", "type"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))  # lower-cased
    type: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="")  # enhanced code, e.g. 5.1.1
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
