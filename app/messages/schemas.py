"""Request and response bodies of the native send API and the message view."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.common import headers as custom_headers
from app.common.fields import (
    Address,
    AwareUtcTime,
    EmailAddress,
    HeaderText,
    StoredJson,
    StoredText,
    capped_metadata,
)
from app.messages import attachments
from app.messages.submission import FileData, Personalization, Submission
from app.tracking.send_settings import SendTracking

MAX_RECIPIENTS = 1000
HEADER_NAMES: dict[str, Any] = {"propertyNames": {"pattern": "^[!-9;-~]+$"}}
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
MAX_GROUPS_TO_DISPLAY = 25  # SendGrid's limit for asm.groups_to_display
# messages.asm_group_id is a 32-bit INTEGER (PostgreSQL refuses anything larger).
GroupId = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]


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

    @model_validator(mode="after")
    def _allowed(self) -> AttachmentIn:
        refusal = custom_headers.attachment_problem(
            self.filename, self.content_type, self.content_id
        ) or attachments.refusal(self.filename, self.content_type, self.decoded())
        if refusal is not None:
            raise ValueError(refusal)
        return self

    def file(self) -> FileData:
        """The decoded attachment."""
        return FileData(
            filename=self.filename,
            content_type=self.content_type,
            data=self.decoded(),
            content_id=self.content_id,
            disposition=self.disposition or ("inline" if self.content_id else "attachment"),
        )


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Valid names, none reserved, values that render."""
    for name, value in headers.items():
        reason = custom_headers.problem(name, value)
        if reason is not None:
            raise ValueError(reason)
    return headers


Metadata = Annotated[dict[str, str | int | float | bool], AfterValidator(capped_metadata)]


class BulkRecipient(BaseModel):
    """One recipient of a bulk send: their own copy, data, metadata and send time."""

    model_config = ConfigDict(extra="forbid")

    to: Address
    template_data: dict[str, Any] = Field(
        default_factory=dict, description="Template data for this recipient's copy."
    )
    metadata: Metadata = Field(
        default_factory=dict, description="Carried into this recipient's events."
    )
    send_at: AwareUtcTime | None = Field(
        default=None, description="When to send this copy (ISO 8601 or Unix time)."
    )
    subject: HeaderText | None = Field(default=None, min_length=1, max_length=998)
    headers: dict[str, HeaderText] = Field(default_factory=dict, json_schema_extra=HEADER_NAMES)

    _valid_headers = field_validator("headers")(_check_headers)

    def personalization(self, index: int) -> Personalization:
        """This recipient as a copy of its own."""
        return Personalization(
            to=(self.to,),
            subject=self.subject,
            headers=self.headers,
            data=self.template_data,
            custom_args=dict(self.metadata),
            send_at=self.send_at,
            field_path=f"recipients.{index}",
        )


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
                },
                {
                    "from": "deals@shop.example",
                    "template_id": "d-8f1a0c2e9b4d4e6fa1b2c3d4e5f60718",
                    "categories": ["promotion"],
                    "batch_id": "01JD3Q8M2Y6W0V5N4K7R1T9ZXC",
                    "recipients": [
                        {
                            "to": {"email": "alice@example.com", "name": "Alice"},
                            "template_data": {"name": "Alice", "code": "A-10"},
                            "metadata": {"customer": "c-1"},
                        },
                        {
                            "to": "bob@example.com",
                            "template_data": {"name": "Bob", "code": "B-20"},
                            "metadata": {"customer": "c-2"},
                            "send_at": "2026-12-01T08:00:00+01:00",
                        },
                    ],
                },
                {
                    "from": "news@shop.example",
                    "subject": "Hello {{ name }}",
                    "html": "<p>Hi {{ name }}, your code is <b>{{ code }}</b>.</p>",
                    "template_engine": "jinja",
                    "recipients": [
                        {"to": "carol@example.com", "template_data": {"name": "Carol", "code": 7}}
                    ],
                },
            ]
        },
    )

    from_: Address = Field(alias="from")
    recipients: list[BulkRecipient] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        description="Bulk: one copy per recipient, each with its own template data, "
        "metadata and send time. Use this or `to`.",
    )
    to: list[Address] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        validate_default=True,
        description="One copy, shown with these To addresses. Use this or `recipients`.",
    )
    cc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    reply_to: list[Address] = Field(default_factory=list, max_length=100)
    subject: HeaderText | None = Field(default=None, min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    headers: dict[str, HeaderText] = Field(default_factory=dict, json_schema_extra=HEADER_NAMES)
    attachments: list[AttachmentIn] = Field(default_factory=list)
    categories: list[HeaderText] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    metadata: Metadata = Field(default_factory=dict)
    template_id: str | None = Field(
        default=None, max_length=64, description="A stored template (`/v1/templates`)."
    )
    template_engine: Literal["jinja", "handlebars"] | None = Field(
        default=None,
        description="Render the inline subject, text and html as templates in this language.",
    )
    template_data: dict[str, Any] | None = Field(
        default=None, description="Template data shared by every copy (a recipient's wins)."
    )
    send_at: AwareUtcTime | None = Field(
        default=None, description="When to send (ISO 8601 or Unix time); default now."
    )
    batch_id: str | None = Field(default=None, max_length=64, description="See /v1/batches.")
    unsubscribe_group: GroupId | None = Field(
        default=None,
        description="The unsubscribe group (`/v3/asm/groups`): recipients who opted out of it, "
        "or out of all mail, are dropped.",
    )
    groups_to_display: list[GroupId] = Field(
        default_factory=list,
        max_length=MAX_GROUPS_TO_DISPLAY,
        description="The groups the recipient's preference page offers (needs "
        "`unsubscribe_group`).",
    )
    tracking_settings: SendTracking | None = Field(
        default=None,
        description="Open, click and subscription tracking and Google Analytics for this "
        "send, in the shape of SendGrid's; overrides the account's defaults.",
    )
    list_unsubscribe: bool | None = Field(
        default=None,
        description="Bulk mail: every copy carries List-Unsubscribe and one-click "
        "List-Unsubscribe-Post (RFC 8058); default: the account's setting.",
    )

    _normalise_reply_to = field_validator("reply_to", mode="before")(_as_list)
    _valid_headers = field_validator("headers")(_check_headers)

    @field_validator("to")
    @classmethod
    def _one_way_to_address(cls, to: list[EmailAddress], info: ValidationInfo) -> list[Any]:
        if bool(to) == bool(info.data.get("recipients")):
            raise ValueError("give either to (one shared copy) or recipients (one copy each)")
        return to

    @field_validator("categories")
    @classmethod
    def _check_categories(cls, categories: list[str]) -> list[str]:
        if any(len(category) > MAX_CATEGORY_LENGTH for category in categories):
            raise ValueError(f"a category may be at most {MAX_CATEGORY_LENGTH} characters")
        return categories

    @model_validator(mode="after")
    def _check_message(self) -> SendRequest:
        if self.template_id is None and not (self.text or self.html):
            raise ValueError("give at least one body: text or html (or a template_id)")
        if self.template_id is not None and self.template_engine is not None:
            raise ValueError("template_engine is for inline content; a template has its own")
        if self.recipients and (self.cc or self.bcc):
            raise ValueError("cc and bcc go with to; each of recipients gets a copy of its own")
        if self.groups_to_display and self.unsubscribe_group is None:
            raise ValueError("groups_to_display needs unsubscribe_group")
        addresses = self._addresses()
        if len(addresses) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in one request")
        if len(set(addresses)) != len(addresses):
            raise ValueError("each address may appear only once in one request")
        return self

    def _addresses(self) -> list[str]:
        shown = (*self.to, *self.cc, *self.bcc, *(r.to for r in self.recipients))
        return [address.email.lower() for address in shown]

    def submission(self) -> Submission:
        """The request in the accept service's terms."""
        if self.recipients:
            personalizations = tuple(r.personalization(i) for i, r in enumerate(self.recipients))
        else:
            personalizations = (
                Personalization(to=tuple(self.to), cc=tuple(self.cc), bcc=tuple(self.bcc)),
            )
        return Submission(
            sender=self.from_,
            personalizations=personalizations,
            subject=self.subject,
            text=self.text,
            html=self.html,
            reply_to=tuple(self.reply_to),
            headers=self.headers,
            attachments=tuple(attachment.file() for attachment in self.attachments),
            categories=tuple(self.categories),
            custom_args=dict(self.metadata),
            template_id=self.template_id,
            template_engine=self.template_engine,
            template_data=self.template_data,
            send_at=self.send_at,
            batch_id=self.batch_id,
            asm_group_id=self.unsubscribe_group,
            groups_to_display=tuple(self.groups_to_display),
            settings=self._settings(),
            field_names=FIELD_NAMES,
        )

    def _settings(self) -> dict[str, Any]:
        """What the message keeps as given, in the shape of SendGrid's: the group (`asm`),
        tracking_settings and mail_settings (list_unsubscribe)."""
        stored: dict[str, Any] = {}
        if self.unsubscribe_group is not None:
            stored["asm"] = {
                "group_id": self.unsubscribe_group,
                "groups_to_display": self.groups_to_display,
            }
        if self.tracking_settings is not None:
            stored["tracking_settings"] = self.tracking_settings.stored()
        if self.list_unsubscribe is not None:
            stored["mail_settings"] = {"list_unsubscribe": {"enable": self.list_unsubscribe}}
        return stored


# The native names of fields the accept service names as SendGrid does.
FIELD_NAMES = {"asm.group_id": "unsubscribe_group", "asm.groups_to_display": "groups_to_display"}


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
    tls_cipher: str | None = None
    # Whether the certificate validated for the MX host's name; null without TLS.
    tls_verified: bool | None = None
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
    data: StoredJson


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
    message_id: StoredText = Field(description="The Message-ID header.")
    from_: StoredJson = Field(alias="from")
    subject: StoredText
    categories: list[StoredText]
    metadata: StoredJson
    created_at: datetime
    size: int
    content_purged: bool = Field(
        False,
        description="True once COLUMBA_CONTENT_RETENTION removed the bodies, attachments and "
        "personal data of this finished message; its statuses, attempts and events stay.",
    )
    recipients: list[RecipientView]
