"""Tables: unsubscribe_groups, group_suppressions (SendGrid's ASM).

A global unsubscribe is not here: it is a `suppressions` row of type `unsubscribe`, the list
SendGrid serves both as /v3/suppression/unsubscribes and /v3/asm/suppressions/global."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime

# SendGrid's limits (tsg_suppressions_v3.yaml): name ≤ 30 characters, description ≤ 100.
NAME_MAX = 30
DESCRIPTION_MAX = 100
_GROUP_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class UnsubscribeGroup(Base):
    """A kind of mail recipients can opt out of alone (newsletters, promotions, …)."""

    __tablename__ = "unsubscribe_groups"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    # An integer, as SendGrid's group ids are (`asm.group_id` is a 32-bit integer).
    id: Mapped[int] = mapped_column(_GROUP_ID, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    description: Mapped[str] = mapped_column(String(DESCRIPTION_MAX), default="")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class GroupSuppression(Base):
    """An address that opted out of one group: sends with that group are dropped for it."""

    __tablename__ = "group_suppressions"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("unsubscribe_groups.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(320), primary_key=True)  # lower-cased
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
