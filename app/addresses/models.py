"""Table: erasures, the audit trail of address erasures (which never names the address)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, JSONType, UTCDateTime
from app.core.ids import new_id


class Erasure(Base):
    """One erase of one address: when, by whom, and how many rows of each table it touched."""

    __tablename__ = "erasures"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # `key:<api key id>` for the API, `cli` for `columba addresses erase`.
    actor: Mapped[str] = mapped_column(String(64))
    counts: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
