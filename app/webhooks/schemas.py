"""Bodies of the webhooks API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from app.common.fields import NotNull
from app.events.models import EventType
from app.webhooks.models import PayloadFormat


def _known_types(values: list[str] | None) -> list[str] | None:
    """Event type names must be Columba's; an empty list means every type."""
    if values is None:
        return None
    known = {event_type.value for event_type in EventType}
    unknown = [value for value in values if value not in known]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return sorted(set(values)) or None


class WebhookCreate(BaseModel):
    """`POST /v1/webhooks`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://hooks.shop.example/columba", "event_types": ["bounced"]}]
        },
    )

    url: Url
    description: Description = ""
    event_types: list[str] | None = Field(
        default=None, description="Event types to send; omit or empty for all."
    )
    format: PayloadFormat = PayloadFormat.STANDARD
    enabled: bool = True

    _check_types = field_validator("event_types")(_known_types)


Url = Annotated[str, Field(max_length=2048)]
Description = Annotated[str, Field(max_length=255)]


class WebhookUpdate(BaseModel):
    """`PATCH /v1/webhooks/{id}`: only the fields given change (`event_types: null` means
    every type again; the others may not be null)."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[Url | SkipJsonSchema[None], NotNull] = None
    description: Annotated[Description | SkipJsonSchema[None], NotNull] = None
    event_types: list[str] | None = None
    format: Annotated[PayloadFormat | SkipJsonSchema[None], NotNull] = None
    enabled: Annotated[bool | SkipJsonSchema[None], NotNull] = None

    _check_types = field_validator("event_types")(_known_types)


class WebhookView(BaseModel):
    """An endpoint (never its secret)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    description: str
    event_types: list[str] | None
    format: str
    enabled: bool
    consecutive_failures: int
    disabled_reason: str | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookView):
    """An endpoint just created: the only time its secret is shown."""

    secret: str = Field(description="`whsec_…`: verify signatures with it. Shown only now.")


class SecretRotated(BaseModel):
    """A new secret; the previous one keeps signing alongside it for a day."""

    secret: str
    previous_secret_expires_at: datetime


class WebhookList(BaseModel):
    """The account's endpoints."""

    webhooks: list[WebhookView]


class DeliveryView(BaseModel):
    """One attempt to deliver a batch."""

    id: int
    webhook_message_id: str = Field(description="The `webhook-id` header: same on every retry.")
    attempt: int
    attempted_at: datetime
    succeeded: bool
    response_status: int | None
    error: str | None
    duration_ms: int
    event_count: int
    ip: str | None
    batch_state: str
    next_attempt_at: datetime | None = Field(description="When a failed batch is tried again.")


class DeliveryList(BaseModel):
    """Attempts, newest first."""

    deliveries: list[DeliveryView]
    next_cursor: str | None


class ReplayQueued(BaseModel):
    """What a replay queued."""

    queued: int = Field(description="Events queued again for this endpoint.")
