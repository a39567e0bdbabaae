"""Tables: webhooks, webhook_outbox, webhook_batches, webhook_attempts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core import clock
from app.core.db import Base, JSONType, UTCDateTime
from app.core.ids import new_id
from app.messages.models import AutoIncrement


class PayloadFormat(StrEnum):
    """How an endpoint wants its events."""

    STANDARD = "standard"  # {"type", "timestamp", "data": [event, ...]}
    SENDGRID = "sendgrid"  # SendGrid's event webhook: a JSON array with SendGrid's names


class BatchState(StrEnum):
    """Where one batch (one webhook-id) stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # retried for WEBHOOK_RETRY_PERIOD without success


class Webhook(Base):
    """An endpoint of an account: URL, event filter, signing secret (encrypted), health."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(255), default="")
    event_types: Mapped[list[str] | None] = mapped_column(JSONType, default=None)  # None: all
    format: Mapped[str] = mapped_column(String(16), default=PayloadFormat.STANDARD)
    enabled: Mapped[bool] = mapped_column(default=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet token of the whsec_ secret
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # SendGrid's signed event webhook: the ECDSA P-256 private key (Fernet token of its PEM)
    # and the public key shown to the account (base64 DER); both None while unsigned.
    signing_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    public_key: Mapped[str | None] = mapped_column(Text, default=None)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    lease_token: Mapped[str | None] = mapped_column(String(26), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class WebhookOutbox(Base):
    """One event owed to one endpoint; written in the transaction that writes the event."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        Index(
            "ix_webhook_outbox_pending",
            "webhook_id",
            "id",
            postgresql_where=text("batch_id IS NULL"),
            sqlite_where=text("batch_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_batches.id", ondelete="CASCADE"), index=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class WebhookBatch(Base):
    """Up to 100 events sent together; its id is the `webhook-id`, the same on every retry."""

    __tablename__ = "webhook_batches"
    __table_args__ = (
        Index("ix_webhook_batches_webhook_id_state", "webhook_id", "state"),
        Index("ix_webhook_batches_due", "state", "next_attempt_at"),  # the dispatcher's scan
        Index("ix_webhook_batches_completed_at", "completed_at"),  # retention's scan
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=BatchState.PENDING)
    event_count: Mapped[int] = mapped_column(Integer)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class WebhookAttempt(Base):
    """One POST of a batch: what the endpoint answered (or why nothing was sent)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_webhook_id_id", "webhook_id", "id"),)

    id: Mapped[int] = mapped_column(AutoIncrement, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    batch_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_batches.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[bool] = mapped_column(default=False)
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    ip: Mapped[str | None] = mapped_column(String(45), default=None)
    event_count: Mapped[int] = mapped_column(Integer, default=0)
