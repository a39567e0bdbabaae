"""Table: domains."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, JSONType, UTCDateTime
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
    # When the signing key(s) above started signing (rotation by age counts from here).
    dkim_activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The last full check of the domain's DNS records (app.domains.checks), as JSON.
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_check: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)


class KeyState(StrEnum):
    """Where a DKIM key not (or no longer) signing stands in its rotation."""

    PENDING = "pending"  # generated; signs once its DNS record verifies
    RETIRING = "retiring"  # replaced; still published until `retire_at` for mail in transit
    RETIRED = "retired"  # its record may be removed; the private key is erased


class DomainKey(Base):
    """A DKIM key of a domain outside the signing pair on `domains`: the next one during a
    rotation, or a previous one kept published for its grace period."""

    __tablename__ = "domain_keys"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    selector: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[str] = mapped_column(String(16))  # rsa-sha256 | ed25519-sha256
    private_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)  # Fernet
    public_record: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    retire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
