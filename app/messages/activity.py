"""SendGrid's Email Activity API over the activity search: one row per recipient's copy, as
SendGrid's `msg_id` names one (`<X-Message-Id>.<recipient id>`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.events.models import Event, EventType
from app.messages import search
from app.messages.activity_query import SENDGRID_STATUSES
from app.messages.models import Message, Recipient

# Our event types under the names SendGrid's activity events use.
EVENT_NAMES = {
    EventType.BOUNCED: "bounced",
    EventType.COMPLAINED: "spam_report",
    EventType.UNSUBSCRIBED: "unsubscribe",
    EventType.GROUP_UNSUBSCRIBED: "group_unsubscribe",
    EventType.GROUP_RESUBSCRIBED: "group_resubscribe",
}
_STATUS_NAMES = {
    str(status): name for name, statuses in SENDGRID_STATUSES.items() for status in statuses
}


def sendgrid_status(status: str) -> str:
    """SendGrid's activity status (processed, delivered, not_delivered) of a recipient's."""
    return _STATUS_NAMES.get(status, "processed")


def msg_id_of(message_id: str, recipient_id: str) -> str:
    """SendGrid's per-recipient id (as app.messages.service.sg_message_id)."""
    return f"{message_id}.{recipient_id}"


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """One recipient's copy as the activity list shows it."""

    from_email: str
    msg_id: str
    subject: str
    to_email: str
    status: str
    opens_count: int
    clicks_count: int
    last_event_time: datetime


async def list_activity(
    session: AsyncSession, account_id: str, alternatives: list[search.SearchFilters], limit: int
) -> list[ActivityRow]:
    """The newest `limit` recipients' copies matching any of `alternatives` (the AND groups of
    a query), newest message first."""
    found: dict[str, search.FoundMessage] = {}
    for filters in alternatives:
        for message in await _newest_copies(session, account_id, filters, limit):
            _merge(found, message)
    pairs = [
        (message, recipient)
        for message in sorted(found.values(), key=lambda m: m.id, reverse=True)
        for recipient in sorted(message.recipients, key=lambda r: r.id)
    ][:limit]
    counts = await _engagement(session, [recipient.id for _, recipient in pairs])
    return [
        _row(message, recipient, counts.get(recipient.id, (0, 0, None)))
        for message, recipient in pairs
    ]


PAGE = 100  # messages per search page while collecting rows


async def _newest_copies(
    session: AsyncSession, account_id: str, filters: search.SearchFilters, limit: int
) -> list[search.FoundMessage]:
    """Newest messages first until they list `limit` matching recipients between them (a
    bulk message lists many), a page of messages at a time."""
    collected: list[search.FoundMessage] = []
    rows, cursor = 0, None
    while rows < limit:
        page = await search.search(
            session,
            account_id,
            filters,
            cursor,
            min(limit, PAGE),
            recipients_per_message=limit - rows,
        )
        collected += page.messages
        rows += sum(len(message.recipients) for message in page.messages)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return collected


def _merge(found: dict[str, search.FoundMessage], message: search.FoundMessage) -> None:
    """Add `message`, uniting its listed recipients with those another alternative found."""
    earlier = found.get(message.id)
    if earlier is None:
        found[message.id] = message
        return
    known = {recipient.id for recipient in earlier.recipients}
    earlier.recipients.extend(r for r in message.recipients if r.id not in known)


Engagement = tuple[int, int, datetime | None]  # opens, clicks, last event time


async def _engagement(session: AsyncSession, recipient_ids: list[str]) -> dict[str, Engagement]:
    """Per recipient: opens, clicks and the time of its last event."""
    if not recipient_ids:
        return {}
    query = (
        select(Event.recipient_id, Event.type, func.count(), func.max(Event.created_at))
        .where(Event.recipient_id.in_(recipient_ids))
        .group_by(Event.recipient_id, Event.type)
    )
    result: dict[str, Engagement] = {}
    for recipient_id, type, count, last in await session.execute(query):
        if recipient_id is None:  # not selected (the IN above), but the column is nullable
            continue
        opens, clicks, latest = result.get(recipient_id, (0, 0, None))
        opens += count if type == EventType.OPENED else 0
        clicks += count if type == EventType.CLICKED else 0
        result[recipient_id] = (opens, clicks, last if latest is None else max(latest, last))
    return result


def _row(
    message: search.FoundMessage, recipient: search.FoundRecipient, engagement: Engagement
) -> ActivityRow:
    opens, clicks, last = engagement
    return ActivityRow(
        from_email=message.from_email,
        msg_id=msg_id_of(message.id, recipient.id),
        subject=message.subject,
        to_email=recipient.email,
        status=sendgrid_status(recipient.status),
        opens_count=opens,
        clicks_count=clicks,
        last_event_time=last or recipient.updated_at,
    )


async def activity_detail(session: AsyncSession, account_id: str, msg_id: str) -> dict[str, Any]:
    """SendGrid's view of one recipient's copy, with its events; 404 across accounts."""
    message_id, _, recipient_id = msg_id.partition(".")
    recipient = await session.get(Recipient, recipient_id.upper()) if recipient_id else None
    if recipient is None or recipient.account_id != account_id:
        raise NotFound("message not found", "msg_id")
    if recipient.message_id != message_id.upper():
        raise NotFound("message not found", "msg_id")
    message = await session.get(Message, recipient.message_id)
    assert message is not None  # a recipient's message goes only with it (foreign key)
    rows = await session.scalars(
        select(Event).where(Event.recipient_id == recipient.id).order_by(Event.id)
    )
    personal = (recipient.personalization or {}).get("custom_args") or {}
    return {
        "from_email": message.from_email,
        "msg_id": msg_id_of(message.id, recipient.id),
        "subject": message.subject,
        "to_email": recipient.email,
        "status": sendgrid_status(recipient.status),
        "template_id": message.template_id or "",
        "asm_group_id": message.asm_group_id or 0,
        "teammate": "",
        "api_key_id": message.api_key_id or "",
        "events": [_event_view(event) for event in rows],
        "originating_ip": "",
        "categories": list(message.categories or []),
        "unique_args": {**(message.custom_args or {}), **personal},
        "outbound_ip": "",
        "outbound_ip_type": "",
    }


def _event_view(event: Event) -> dict[str, Any]:
    """One event in SendGrid's activity shape."""
    data = event.data or {}
    return {
        "event_name": EVENT_NAMES.get(EventType(event.type), event.type),
        "processed": event.created_at,
        "reason": str(data.get("reason") or data.get("response") or ""),
        "attempt_num": int(data.get("attempt") or 0),
        "url": str(data.get("url") or ""),
        "bounce_type": str(data.get("bounce_type") or ""),
        "http_user_agent": str(data.get("useragent") or ""),
        "mx_server": str(data.get("mx_host") or ""),
    }
