"""Tables: tracking_settings (an account's defaults, SendGrid's /v3/tracking_settings) and
engagements (the first open and first click of each recipient, for the unique counts)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, UTCDateTime


class TrackingSettings(Base):
    """An account's tracking defaults; a send's `tracking_settings` override them. An account
    without a row has SendGrid's defaults: everything off."""

    __tablename__ = "tracking_settings"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    click_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    click_enable_text: Mapped[bool] = mapped_column(Boolean, default=False)
    open_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    subscription_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    subscription_html_content: Mapped[str] = mapped_column(Text, default="")
    subscription_plain_content: Mapped[str] = mapped_column(Text, default="")
    subscription_landing: Mapped[str] = mapped_column(Text, default="")
    subscription_url: Mapped[str] = mapped_column(Text, default="")
    subscription_replace: Mapped[str] = mapped_column(String(255), default="")
    ga_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    utm_source: Mapped[str] = mapped_column(String(255), default="")
    utm_medium: Mapped[str] = mapped_column(String(255), default="")
    utm_term: Mapped[str] = mapped_column(String(255), default="")
    utm_content: Mapped[str] = mapped_column(String(255), default="")
    utm_campaign: Mapped[str] = mapped_column(String(255), default="")
    # Columba's own: every copy carries List-Unsubscribe (RFC 8058) even without a group or
    # subscription tracking, for accounts whose mail is all bulk.
    list_unsubscribe: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class Engagement(Base):
    """A recipient's first open or first click (`kind`): inserting it succeeds once, which
    is how an event knows it is the unique one, with a write and no read."""

    __tablename__ = "engagements"

    recipient_id: Mapped[str] = mapped_column(
        ForeignKey("recipients.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # "open" or "click"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
