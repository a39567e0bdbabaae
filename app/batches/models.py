"""Table: batches."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime
from app.core.ids import new_id


class BatchStatus(StrEnum):
    """What the sender asked for the batch (SendGrid's scheduled-send status)."""

    ACTIVE = "active"
    PAUSED = "pause"
    CANCELLED = "cancel"


class Batch(Base):
    """A batch id that sends share, so that they can be paused, resumed or cancelled."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
