"""SendGrid's v3 request bodies, field for field (tsg_mail_v3.yaml, tsg_scheduled_sends_v3.yaml).

These models parse the shape; the rules that need the whole request (limits, duplicates,
content order) and SendGrid's own error texts live in app.sendgrid.translate.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from app.common.fields import EmailText, HeaderText
from app.tracking.send_settings import SendTracking


class _Model(BaseModel):
    """SendGrid ignores unknown fields; so do we (clients send newer fields than we know)."""

    model_config = ConfigDict(extra="ignore")


class MailAddress(_Model):
    """An address with an optional display name (SendGrid's "Email Object")."""

    email: EmailText
    name: HeaderText | None = Field(default=None, max_length=256)


class Personalization(_Model):
    """One envelope: who gets this copy and what is personal to it."""

    to: list[MailAddress] = Field(min_length=1)
    cc: list[MailAddress] = Field(default_factory=list, max_length=1000)
    bcc: list[MailAddress] = Field(default_factory=list, max_length=1000)
    from_: MailAddress | None = Field(default=None, alias="from")
    subject: HeaderText | None = Field(default=None, min_length=1)
    headers: dict[str, Any] = Field(default_factory=dict)
    substitutions: dict[str, Any] = Field(default_factory=dict, max_length=10000)
    dynamic_template_data: dict[str, Any] | None = None
    custom_args: dict[str, Any] = Field(default_factory=dict, max_length=10000)
    send_at: StrictInt | None = None


class Content(_Model):
    """One body: its MIME type and value."""

    type: StrictStr = Field(min_length=1)
    value: StrictStr = Field(min_length=1)


class Attachment(_Model):
    """A file, base64-encoded."""

    content: StrictStr = Field(min_length=1)
    filename: HeaderText = Field(min_length=1, max_length=255)
    type: HeaderText | None = Field(default=None, min_length=1, max_length=255)
    disposition: Literal["inline", "attachment"] = "attachment"
    content_id: HeaderText | None = Field(default=None, max_length=255)


# Group ids are kept in a 32-bit INTEGER column (PostgreSQL refuses anything larger).
GroupId = Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]


class Asm(_Model):
    """Unsubscribe group handling."""

    group_id: GroupId
    groups_to_display: list[GroupId] = Field(default_factory=list, max_length=25)


class Switch(_Model):
    """A mail setting that is on or off."""

    enable: bool = False


class Footer(Switch):
    """The footer setting."""

    text: str | None = None
    html: str | None = None


class MailSettings(_Model):
    """mail_settings."""

    bypass_list_management: Switch | None = None
    bypass_spam_management: Switch | None = None
    bypass_bounce_management: Switch | None = None
    bypass_unsubscribe_management: Switch | None = None
    footer: Footer | None = None
    sandbox_mode: Switch | None = None
    # Columba's own (SendGrid has no such setting): List-Unsubscribe on every copy of a
    # send that has no unsubscribe group, because it is bulk mail (RFC 8058).
    list_unsubscribe: Switch | None = None


class MailSend(_Model):
    """`POST /v3/mail/send`."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "personalizations": [
                        {
                            "to": [{"email": "alex@example.com", "name": "Alex"}],
                            "dynamic_template_data": {"first_name": "Alex"},
                        }
                    ],
                    "from": {"email": "orders@example.com", "name": "Example Orders"},
                    "subject": "Your order",
                    "content": [{"type": "text/plain", "value": "Thanks for your order."}],
                }
            ]
        },
    )

    personalizations: list[Personalization] = Field(min_length=1)
    from_: MailAddress = Field(alias="from")
    reply_to: MailAddress | None = None
    reply_to_list: list[MailAddress] = Field(default_factory=list, max_length=1000)
    subject: HeaderText | None = Field(default=None, min_length=1)
    content: list[Content] = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list)
    template_id: StrictStr | None = None
    sections: dict[str, StrictStr] = Field(default_factory=dict)
    headers: dict[str, Any] = Field(default_factory=dict)
    categories: list[StrictStr] = Field(default_factory=list)
    custom_args: dict[str, Any] = Field(default_factory=dict)
    send_at: StrictInt | None = None
    batch_id: StrictStr | None = None
    asm: Asm | None = None
    ip_pool_name: StrictStr | None = None
    mail_settings: MailSettings | None = None
    tracking_settings: SendTracking | None = None


class MailBatch(BaseModel):
    """A batch id (`POST /v3/mail/batch`, `GET /v3/mail/batch/{batch_id}`)."""

    batch_id: str


class ScheduledSendRequest(BaseModel):
    """`POST /v3/user/scheduled_sends`: pause or cancel a batch."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str = Field(min_length=1, max_length=64)
    status: Literal["pause", "cancel"] = "pause"


class ScheduledSendUpdate(BaseModel):
    """`PATCH /v3/user/scheduled_sends/{batch_id}`."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["pause", "cancel"]


class ScheduledSendStatus(BaseModel):
    """A batch that is paused or cancelled."""

    batch_id: str
    status: Literal["pause", "cancel"]
