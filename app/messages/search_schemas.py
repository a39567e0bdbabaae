"""Response bodies of the activity search: `GET /v1/messages` and SendGrid's `/v3/messages`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.common.fields import StoredJson, StoredText


class FoundRecipientView(BaseModel):
    """A recipient of a found message and where its delivery stands."""

    id: str
    email: StoredText
    status: str
    attempt_count: int
    last_code: int | None
    last_response: StoredText | None
    updated_at: datetime


class FoundMessageView(BaseModel):
    """A found message: what identifies it, and its recipients' statuses."""

    id: str
    created_at: datetime = Field(description="When it was accepted.")
    from_: StoredJson = Field(alias="from")
    subject: StoredText
    categories: list[StoredText]
    metadata: StoredJson
    template_id: str | None
    batch_id: str | None
    recipient_count: int
    status_counts: dict[str, int] = Field(description="Recipients per status.")
    recipients: list[FoundRecipientView] = Field(
        description="Up to 10 recipients (only those matching the recipient filters, if any)."
    )
    url: str = Field(description="The message's timeline: every recipient, attempt and event.")


class MessageSearchPage(BaseModel):
    """A page of found messages, newest first."""

    messages: list[FoundMessageView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: done.")


class ActivityMessage(BaseModel):
    """SendGrid's Email Activity row: one recipient's copy of a message."""

    from_email: StoredText
    msg_id: str
    subject: StoredText
    to_email: StoredText
    status: str
    opens_count: int
    clicks_count: int
    last_event_time: datetime


class ActivityList(BaseModel):
    """SendGrid's `GET /v3/messages` answer."""

    messages: list[ActivityMessage]


class ActivityEvent(BaseModel):
    """One event of a recipient's copy, as SendGrid's activity shows it."""

    event_name: str
    processed: datetime
    reason: StoredText
    attempt_num: int
    url: StoredText
    bounce_type: str
    http_user_agent: StoredText
    mx_server: StoredText


class ActivityDetail(BaseModel):
    """SendGrid's `GET /v3/messages/{msg_id}` answer."""

    from_email: StoredText
    msg_id: str
    subject: StoredText
    to_email: StoredText
    status: str
    template_id: str
    asm_group_id: int
    teammate: str
    api_key_id: str
    events: list[ActivityEvent]
    originating_ip: str
    categories: list[StoredText]
    unique_args: StoredJson
    outbound_ip: str
    outbound_ip_type: str
