"""The webhook outbox: a row per event per interested endpoint, written with the event."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.events.recorded import RecordedEvent
from app.webhooks.models import Webhook, WebhookOutbox


def wants(event_types: list[str] | None, event_type: str) -> bool:
    """Whether an endpoint with this filter receives events of this type (None: all)."""
    return not event_types or event_type in event_types


async def enqueue(session: AsyncSession, events: Sequence[RecordedEvent]) -> int:
    """Queue each event for every enabled endpoint of its account that wants it."""
    accounts = sorted({event.account_id for event in events})
    query = select(Webhook.id, Webhook.account_id, Webhook.event_types).where(
        Webhook.account_id.in_(accounts), Webhook.enabled.is_(True)
    )
    endpoints: dict[str, list[tuple[str, list[str] | None]]] = defaultdict(list)
    for row in await session.execute(query):
        endpoints[row.account_id].append((row.id, row.event_types))
    if not endpoints:
        return 0
    now = clock.now()
    rows = [
        {"webhook_id": webhook_id, "event_id": event.id, "created_at": now}
        for event in events
        for webhook_id, event_types in endpoints.get(event.account_id, ())
        if wants(event_types, event.type)
    ]
    if rows:
        await session.execute(insert(WebhookOutbox), rows)
    return len(rows)
