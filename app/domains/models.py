"""Table: domains."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime
from app.core.ids import new_id


class Domain(Base):
    """A domain an account may send from, with its DKIM key (encrypted at rest)."""

    __tablename__ = "domains"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(253))
    dkim_selector: Mapped[str] = mapped_column(String(63))
    dkim_private_key: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token of the PEM
    dkim_public_record: Mapped[str] = mapped_column(Text)  # the TXT value to publish
    # Optional second signature with Ed25519 (RFC 8463), alongside the RSA one.
    ed25519_selector: Mapped[str | None] = mapped_column(String(63), default=None)
    ed25519_private_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    ed25519_public_record: Mapped[str | None] = mapped_column(Text, default=None)
    bounce_domain: Mapped[str] = mapped_column(String(253))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
