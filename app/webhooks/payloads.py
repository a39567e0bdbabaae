"""Webhook bodies: Columba's own (Standard Webhooks style) and SendGrid's event webhook."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.core.strict_json import scrubbed
from app.delivery.classify import BounceKind, Bucket, classify
from app.events.models import EventType
from app.stats.counters import bounce_kind, reply_of

BATCH_TYPE = "message.events"


@dataclass(frozen=True, slots=True)
class EventContext:
    """An event with the message fields its payload shows."""

    id: int
    type: str
    created_at: datetime
    data: dict[str, Any]
    message_id: str | None = None
    recipient_id: str | None = None
    smtp_id: str | None = None  # the Message-ID header
    categories: tuple[str, ...] = ()
    custom_args: dict[str, Any] = field(default_factory=dict)
    email: str | None = None


def standard_event(event: EventContext) -> dict[str, Any]:
    """One event in Columba's format (with U+FFFD for any lone surrogate stored earlier:
    receivers' JSON parsers may reject them)."""
    event_json: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "message_id": event.message_id,
        "recipient_id": event.recipient_id,
        "email": event.email,
        "smtp_id": event.smtp_id,
        "categories": list(event.categories),
        "metadata": event.custom_args,
        "data": event.data,
    }
    return scrubbed(event_json)


def standard_body(events: Sequence[EventContext], *, timestamp: datetime) -> str:
    """`{"type", "timestamp", "data": [...]}` as Standard Webhooks suggests."""
    body = {
        "type": BATCH_TYPE,
        "timestamp": timestamp.isoformat(),
        "data": [standard_event(event) for event in events],
    }
    return json.dumps(body, separators=(",", ":"))


# Columba event types → SendGrid's event names; types SendGrid has no name for are left out.
SENDGRID_NAMES = {
    EventType.PROCESSED: "processed",
    EventType.DROPPED: "dropped",
    EventType.DEFERRED: "deferred",
    EventType.DELIVERED: "delivered",
    EventType.BOUNCED: "bounce",
    EventType.EXPIRED: "bounce",
    EventType.OPENED: "open",
    EventType.CLICKED: "click",
    EventType.UNSUBSCRIBED: "unsubscribe",
    EventType.GROUP_UNSUBSCRIBED: "group_unsubscribe",
    EventType.GROUP_RESUBSCRIBED: "group_resubscribe",
    EventType.COMPLAINED: "spamreport",
}
RESERVED_SENDGRID_FIELDS = frozenset(
    {
        "email", "timestamp", "event", "sg_event_id", "sg_message_id", "smtp-id", "category",
        "reason", "status", "response", "attempt", "type", "bounce_classification", "tls",
        "url", "useragent", "ip", "asm_group_id", "sg_machine_open",
    }
)  # fmt: skip


def sg_event_id(event_id: int) -> str:
    """A 22-character id like SendGrid's, stable for the event."""
    return base64.urlsafe_b64encode(event_id.to_bytes(16, "big")).decode().rstrip("=")


def sendgrid_event(event: EventContext) -> dict[str, Any] | None:
    """One event in SendGrid's format (None when SendGrid has no such event)."""
    name = SENDGRID_NAMES.get(event.type)  # type: ignore[call-overload]
    if name is None:
        return None
    item: dict[str, Any] = {
        key: value
        for key, value in event.custom_args.items()
        if key not in RESERVED_SENDGRID_FIELDS  # custom args are merged flat, as in SendGrid
    }
    item.update(
        email=event.email,
        timestamp=int(event.created_at.timestamp()),
        event=name,
        sg_event_id=sg_event_id(event.id),
        sg_message_id=f"{event.message_id}.{event.recipient_id}" if event.message_id else None,
    )
    if event.smtp_id:
        item["smtp-id"] = event.smtp_id
    if "asm_group_id" in event.data:  # the message's unsubscribe group, as SendGrid sends it
        item["asm_group_id"] = event.data["asm_group_id"]
    if event.categories:
        categories = list(event.categories)
        item["category"] = categories[0] if len(categories) == 1 else categories
    item.update(_sendgrid_details(event))
    return scrubbed({key: value for key, value in item.items() if value is not None})


def _sendgrid_details(event: EventContext) -> dict[str, Any]:
    """The fields SendGrid adds for each kind of event."""
    data = event.data
    response = data.get("response")
    if event.type == EventType.DELIVERED:
        return {"response": response, "tls": 1 if data.get("tls") else 0}
    if event.type == EventType.DEFERRED:
        return {"response": response, "attempt": str(data.get("attempt", 1))}
    if event.type == EventType.DROPPED:
        return {"reason": data.get("reason"), "status": data.get("status", "5.0.0")}
    if event.type in (EventType.BOUNCED, EventType.EXPIRED):
        return _bounce_details(event.type, data)
    if event.type == EventType.OPENED:
        # SendGrid flags Apple Mail Privacy Protection's (and other machines') opens.
        machine = bool(data.get("machine"))
        return {
            "useragent": data.get("useragent"),
            "ip": data.get("ip"),
            "sg_machine_open": machine,
        }
    if event.type == EventType.CLICKED:
        return {"useragent": data.get("useragent"), "ip": data.get("ip"), "url": data.get("url")}
    if event.type in (EventType.GROUP_UNSUBSCRIBED, EventType.GROUP_RESUBSCRIBED):
        return {
            "asm_group_id": data.get("asm_group_id"),
            "useragent": data.get("useragent"),
            "ip": data.get("ip"),
        }
    if event.type == EventType.UNSUBSCRIBED:
        return {"useragent": data.get("useragent"), "ip": data.get("ip")}
    return {}


def _bounce_details(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """reason, status, type (bounce or blocked) and bounce_classification."""
    enhanced = data.get("enhanced_code") or data.get("status")
    reason = str(data.get("response") or data.get("reason") or "")
    if event_type == EventType.EXPIRED:
        blocked, bucket = True, str(Bucket.TECHNICAL)
    else:
        blocked = bounce_kind(data) is BounceKind.BLOCK
        bucket = str(data.get("bounce_classification") or classify(reply_of(data)).bucket)
    return {
        "reason": reason,
        "status": enhanced or ("4.4.7" if event_type == EventType.EXPIRED else "5.0.0"),
        "type": "blocked" if blocked else "bounce",
        "bounce_classification": bucket,
    }


def sendgrid_body(events: Sequence[EventContext]) -> str | None:
    """SendGrid's JSON array; None when no event has a SendGrid equivalent."""
    items = [item for item in map(sendgrid_event, events) if item is not None]
    return json.dumps(items, separators=(",", ":")) if items else None
