"""Writing events: every state change adds its events in the transaction that makes it.

`record()` is the one place events are written, so it is also where the stats counters and
the webhook outbox are kept: they commit or roll back with the events themselves (outbox
pattern, CHECKLIST 22). However many events one call writes, it costs a handful of
statements: one INSERT for the events, one SELECT of their messages' categories, one upsert of
the counters, one SELECT of the account's endpoints and one INSERT into the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.events.models import Event
from app.events.recorded import RecordedEvent
from app.messages.models import Message
from app.stats import counters
from app.webhooks import outbox

_EVENTS: Table = Event.__table__  # type: ignore[assignment]
# Core, not ORM-enabled, INSERT: the ORM's bulk path costs more CPU than the round trip.
_INSERT_EVENTS = insert(_EVENTS).returning(_EVENTS.c.id)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be written."""

    account_id: str
    type: str
    message_id: str | None = None
    recipient_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    # The message's categories when the writer has them at hand (saves looking them up).
    categories: tuple[str, ...] | None = None


async def record(session: AsyncSession, events: Sequence[NewEvent]) -> list[int]:
    """Append events in the caller's transaction, count them and queue them for webhooks."""
    if not events:
        return []
    now = clock.now()
    rows: list[dict[str, Any]] = [
        {
            "account_id": event.account_id,
            "type": event.type,
            "message_id": event.message_id,
            "recipient_id": event.recipient_id,
            "data": event.data,
            "created_at": event.created_at or now,
        }
        for event in events
    ]
    # One multi-row INSERT … RETURNING per 1,000 rows (SQLAlchemy's "insertmanyvalues").
    # RETURNING promises no order, but each statement numbers its VALUES rows in order (one
    # sequence on PostgreSQL, max(rowid)+1 under SQLite's write lock), so the sorted ids are the
    # rows' ids. (Asking SQLAlchemy to sort falls back to one INSERT per row on SQLite.)
    ids = sorted((await session.execute(_INSERT_EVENTS, rows)).scalars())
    categories = await _categories(
        session, {e.message_id for e in events if e.message_id and e.categories is None}
    )
    recorded = [
        RecordedEvent(
            id=event_id,
            account_id=event.account_id,
            type=event.type,
            message_id=event.message_id,
            recipient_id=event.recipient_id,
            data=event.data,
            created_at=row["created_at"],
            categories=(
                event.categories
                if event.categories is not None
                else categories.get(event.message_id or "", ())
            ),
        )
        for event_id, event, row in zip(ids, events, rows, strict=True)
    ]
    await counters.count(session, recorded)
    await outbox.enqueue(session, recorded)
    return ids


async def _categories(
    session: AsyncSession, message_ids: set[str | None]
) -> dict[str, tuple[str, ...]]:
    """The categories of each message (stats are kept per category too)."""
    if not message_ids:
        return {}
    query = select(Message.id, Message.categories).where(Message.id.in_(sorted(message_ids)))
    return {row.id: tuple(row.categories or ()) for row in await session.execute(query)}


async def for_message(session: AsyncSession, *, message_id: str) -> list[Event]:
    """A message's events in the order they happened."""
    query = select(Event).where(Event.message_id == message_id).order_by(Event.id)
    return list((await session.execute(query)).scalars())
