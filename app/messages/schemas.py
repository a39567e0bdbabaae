"""Request and response bodies of the native send API and the message view."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.common.fields import Address, HeaderText, header_name

MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
# Headers Columba writes itself; a custom header may not replace or duplicate them.
RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "subject", "reply-to", "date", "message-id", "mime-version",
        "content-type", "content-transfer-encoding", "content-disposition", "dkim-signature",
        "received", "return-path", "sender", "x-sg-id", "x-sg-eid",
    }
)  # fmt: skip


class AttachmentIn(BaseModel):
    """A file to attach: base64 content; `content_id` makes it inline (`cid:` in the html)."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(description="Base64-encoded file content.")
    filename: HeaderText = Field(min_length=1, max_length=255)
    content_type: HeaderText = Field(default="application/octet-stream", max_length=255)
    content_id: HeaderText | None = Field(default=None, max_length=255)
    disposition: Literal["attachment", "inline"] | None = None

    @field_validator("content")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("content must be base64-encoded") from exc
        return value

    def decoded(self) -> bytes:
        """The file's bytes."""
        return base64.b64decode(self.content)


def _as_list(value: object) -> object:
    """reply_to may be one address or a list of them."""
    return [value] if isinstance(value, str | dict) else value


class SendRequest(BaseModel):
    """`POST /v1/send`: one message, one copy for every address in to, cc and bcc."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "from": {"email": "receipts@shop.example", "name": "Shop"},
                    "to": ["alice@example.com"],
                    "subject": "Your receipt",
                    "text": "Thanks for your order.",
                    "html": "<p>Thanks for your order.</p>",
                    "categories": ["receipt"],
                    "metadata": {"order_id": "1234"},
                }
            ]
        },
    )

    from_: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    reply_to: list[Address] = Field(default_factory=list, max_length=100)
    subject: HeaderText = Field(min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    headers: dict[str, HeaderText] = Field(default_factory=dict)
    attachments: list[AttachmentIn] = Field(default_factory=list)
    categories: list[HeaderText] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)

    _normalise_reply_to = field_validator("reply_to", mode="before")(_as_list)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            header_name(name)
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"the {name} header is set by Columba and cannot be given")
        return headers

    @field_validator("categories")
    @classmethod
    def _check_categories(cls, categories: list[str]) -> list[str]:
        if any(len(category) > MAX_CATEGORY_LENGTH for category in categories):
            raise ValueError(f"a category may be at most {MAX_CATEGORY_LENGTH} characters")
        return categories

    @model_validator(mode="after")
    def _check_message(self) -> SendRequest:
        if not (self.text or self.html):
            raise ValueError("give at least one body: text or html")
        addresses = [a.email.lower() for a in (*self.to, *self.cc, *self.bcc)]
        if len(addresses) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in to, cc and bcc together")
        if len(set(addresses)) != len(addresses):
            raise ValueError("each address may appear only once across to, cc and bcc")
        return self


class RecipientAccepted(BaseModel):
    """One recipient of an accepted message."""

    id: str
    email: str
    status: str


class SendAccepted(BaseModel):
    """The 202 answer: the message id and a row per recipient."""

    id: str
    recipients: list[RecipientAccepted]


class AttemptView(BaseModel):
    """One SMTP try."""

    model_config = ConfigDict(from_attributes=True)

    started_at: datetime
    duration_ms: int
    outcome: str
    mx_host: str | None
    ip: str | None
    tls_version: str | None
    stage: str | None
    code: int | None
    enhanced_code: str | None
    response: str | None


class EventView(BaseModel):
    """One event."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    type: str
    created_at: datetime
    data: dict[str, Any]


class RecipientView(BaseModel):
    """A recipient with its history."""

    id: str
    email: str
    kind: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_code: int | None
    last_enhanced_code: str | None
    last_response: str | None
    attempts: list[AttemptView]
    events: list[EventView]


class MessageView(BaseModel):
    """`GET /v1/messages/{id}`: the message, its recipients, their attempts and events."""

    id: str
    message_id: str = Field(description="The Message-ID header.")
    from_: dict[str, Any] = Field(alias="from")
    subject: str
    categories: list[str]
    metadata: dict[str, Any]
    created_at: datetime
    size: int
    recipients: list[RecipientView]
