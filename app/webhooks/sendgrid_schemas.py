"""Bodies of SendGrid's event webhook settings (`/v3/user/webhooks/event/*`), and how their
event flags map onto an endpoint's event types."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.events.models import EventType
from app.webhooks.models import Webhook

# SendGrid's flag → the Columba events it selects (an expiry is a bounce in SendGrid's format).
FLAGS: dict[str, tuple[EventType, ...]] = {
    "group_resubscribe": (EventType.GROUP_RESUBSCRIBED,),
    "delivered": (EventType.DELIVERED,),
    "group_unsubscribe": (EventType.GROUP_UNSUBSCRIBED,),
    "spam_report": (EventType.COMPLAINED,),
    "bounce": (EventType.BOUNCED, EventType.EXPIRED),
    "deferred": (EventType.DEFERRED,),
    "unsubscribe": (EventType.UNSUBSCRIBED,),
    "processed": (EventType.PROCESSED,),
    "open": (EventType.OPENED,),
    "click": (EventType.CLICKED,),
    "dropped": (EventType.DROPPED,),
}
# With every flag off the endpoint still exists but receives no event: it is kept to an event
# type SendGrid's format never carries (a None or empty filter would mean every type).
NOTHING = [EventType.WEBHOOK_DISABLED.value]

Url = Annotated[str, Field(max_length=2048)]
FriendlyName = Annotated[str, Field(max_length=255)]


def flags_of(webhook: Webhook) -> dict[str, bool]:
    """The endpoint's event filter as SendGrid's flags."""
    wanted = webhook.event_types
    return {
        flag: wanted is None or wanted == [] or all(t.value in wanted for t in types)
        for flag, types in FLAGS.items()
    }


def event_types_of(flags: dict[str, bool]) -> list[str]:
    """The event filter for SendGrid's flags."""
    chosen = sorted({t.value for flag, types in FLAGS.items() if flags.get(flag) for t in types})
    return chosen or NOTHING


class SgWebhookRequest(BaseModel):
    """Create or update an event webhook (flags left out: off on create, unchanged on update).
    OAuth is not offered: a request with OAuth credentials is refused rather than sent
    without the token its receiver expects."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"enabled": True, "url": "https://hooks.shop.example/sg", "bounce": True}]
        },
    )

    url: Url
    enabled: bool | None = None
    friendly_name: FriendlyName | None = None
    group_resubscribe: bool | None = None
    delivered: bool | None = None
    group_unsubscribe: bool | None = None
    spam_report: bool | None = None
    bounce: bool | None = None
    deferred: bool | None = None
    unsubscribe: bool | None = None
    processed: bool | None = None
    open: bool | None = None
    click: bool | None = None
    dropped: bool | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    oauth_token_url: str | None = None

    def flags(self) -> dict[str, bool]:
        """The flags given."""
        return {flag: value for flag in FLAGS if (value := getattr(self, flag)) is not None}


class SgWebhook(BaseModel):
    """An event webhook as SendGrid shows it (`public_key` only while it is signed)."""

    id: str
    enabled: bool
    url: str
    friendly_name: str | None
    group_resubscribe: bool
    delivered: bool
    group_unsubscribe: bool
    spam_report: bool
    bounce: bool
    deferred: bool
    unsubscribe: bool
    processed: bool
    open: bool
    click: bool
    dropped: bool
    public_key: str | None = None
    created_date: datetime | None
    updated_date: datetime | None

    @classmethod
    def of(cls, webhook: Webhook) -> SgWebhook:
        """From the stored endpoint."""
        return cls(
            id=webhook.id,
            enabled=webhook.enabled,
            url=webhook.url,
            friendly_name=webhook.description or None,
            public_key=webhook.public_key,
            created_date=webhook.created_at,
            updated_date=webhook.updated_at,
            **flags_of(webhook),
        )


def unset_webhook() -> SgWebhook:
    """What the single-webhook form shows before any endpoint exists: disabled, no URL, no
    event (as SendGrid's settings read before they were ever set)."""
    return SgWebhook(
        id="",
        enabled=False,
        url="",
        friendly_name=None,
        created_date=None,
        updated_date=None,
        **dict.fromkeys(FLAGS, False),
    )


class SgWebhookList(BaseModel):
    """Every SendGrid-format endpoint of the account, and how many it may have."""

    max_allowed: int
    webhooks: list[SgWebhook]


class SgSigningRequest(BaseModel):
    """Turn SendGrid's signature on or off."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool


class SgSigning(BaseModel):
    """The endpoint's public key (base64 DER SubjectPublicKeyInfo); empty while unsigned."""

    id: str
    public_key: str


class SgTestRequest(BaseModel):
    """Send a test event to `url` (signed with the key of endpoint `id`, when it is signed)."""

    model_config = ConfigDict(extra="ignore")

    url: Url
    id: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    oauth_token_url: str | None = None
