"""Writing events: every state change adds its events in the transaction that makes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.events.models import Event


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be written."""

    account_id: str
    type: str
    message_id: str | None = None
    recipient_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


async def record(session: AsyncSession, events: Sequence[NewEvent]) -> None:
    """Append events in the caller's transaction (one INSERT for all of them)."""
    if not events:
        return
    now = clock.now()
    rows = [
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
    await session.execute(insert(Event), rows)


async def for_message(session: AsyncSession, *, message_id: str) -> list[Event]:
    """A message's events in the order they happened."""
    query = select(Event).where(Event.message_id == message_id).order_by(Event.id)
    return list((await session.execute(query)).scalars())
