"""Bodies of `GET /v1/inbound`: the messages `columba inbound` received."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.bounces.models import InboundMessage


class InboundRecipient(BaseModel):
    """One recipient the message was about, and what it did to it."""

    model_config = ConfigDict(extra="allow")

    email: str
    action: str = Field(description="bounce, complaint, unsubscribe; or the DSN's Action.")
    recipient_id: str | None = None
    recorded: bool | None = Field(
        default=None, description="False when an earlier report had already recorded it."
    )
    status: str | None = None
    bounce_type: str | None = None
    bounce_classification: str | None = None


class InboundView(BaseModel):
    """One received message and what was concluded about it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    received_at: datetime
    outcome: str = Field(
        description="bounce, delay, delivered, complaint, feedback, unsubscribe, auto_reply "
        "or unclassified."
    )
    detector: str = Field(description="What recognised it: dsn, global-dsn, arf, text, …")
    email: str | None = Field(description="The recipient the bounce address names.")
    recipient_id: str | None
    message_id: str | None
    bounce_type: str | None = Field(description="hard, soft, block or unknown, for bounces.")
    bounce_classification: str | None = Field(description="SendGrid's bucket, for bounces.")
    classification_rule: str | None
    status: str | None = Field(description="The enhanced status code (RFC 3463).")
    diagnostic: str | None = Field(description="The remote server's reply, as reported.")
    feedback_type: str | None = Field(description="The ARF feedback type, for reports.")
    reporting_mta: str | None
    reason: str | None = Field(description="Why nothing was concluded, when nothing was.")
    recipients: list[InboundRecipient]
    events: int = Field(description="Events this message recorded.")
    duplicates: int = Field(description="Reports it repeated (recorded once already).")
    subject: str
    sender: str | None = Field(description="Its From address.")
    envelope_sender: str = Field(description="Its MAIL FROM; empty for bounces (null path).")
    verp: str = Field(description="The bounce address it was sent to.")
    size: int = Field(description="Its size in bytes.")
    raw_truncated: bool = Field(description="True when only the first bytes were kept.")

    @classmethod
    def of(cls, row: InboundMessage) -> InboundView:
        """The view of a row."""
        return cls.model_validate(row)


class InboundList(BaseModel):
    """A page of received messages, newest first."""

    messages: list[InboundView]
    next_cursor: str | None = Field(description="Pass as `before` for the next page; null at end.")
