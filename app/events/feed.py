"""Reading the event feed: one account's events after a cursor, in commit order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.common.fields import as_int64
from app.events.models import Event
from app.events.schemas import EventPage, FeedEvent

POLL_INTERVAL = 0.25  # seconds between looks while a long poll waits


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """What a reader asks for."""

    account_id: str
    after: int
    limit: int
    types: tuple[str, ...] = ()
    message_id: str | None = None


def parse_cursor(cursor: str | None) -> int:
    """A cursor is a feed position; absent means the beginning. ValueError when malformed."""
    if cursor is None or cursor == "":
        return 0
    position = as_int64(cursor)  # positions are BIGINTs: anything else was never a cursor
    if position is None:
        raise ValueError("cursor must be a value returned as next_cursor")
    return position


async def page(session: AsyncSession, query: FeedQuery) -> EventPage:
    """The next events after the cursor.

    The account's highest position is read first: every position up to it is committed and
    visible (positions appear in increasing order), so the page may safely move the cursor
    up to it even when the filters matched nothing there."""
    horizon = await session.scalar(
        select(func.max(Event.position)).where(
            Event.account_id == query.account_id, Event.position > query.after
        )
    )
    if horizon is None:
        return EventPage(events=[], next_cursor=str(query.after), has_more=False)
    statement = (
        select(Event)
        .where(
            Event.account_id == query.account_id,
            Event.position > query.after,
            Event.position <= horizon,
        )
        .order_by(Event.position)
        .limit(query.limit + 1)
    )
    if query.types:
        statement = statement.where(Event.type.in_(query.types))
    if query.message_id is not None:
        statement = statement.where(Event.message_id == query.message_id)
    rows = list((await session.execute(statement)).scalars())
    has_more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_position = rows[-1].position if has_more else horizon
    return EventPage(
        events=[_view(row) for row in rows], next_cursor=str(next_position), has_more=has_more
    )


def _view(event: Event) -> FeedEvent:
    """An event as the feed shows it."""
    email = event.data.get("email") if isinstance(event.data, dict) else None
    return FeedEvent(
        id=event.id,
        cursor=str(event.position),
        type=event.type,
        created_at=event.created_at,
        message_id=event.message_id,
        recipient_id=event.recipient_id,
        email=email if isinstance(email, str) else None,
        data=event.data,
    )


async def wait_for_page(
    read: Callable[[], Awaitable[EventPage]],
    *,
    wait: float,
    hold: Callable[[], AbstractContextManager[asyncio.Event | None]] = nullcontext,
    interval: float = POLL_INTERVAL,
) -> EventPage:
    """Read; while the page is empty and `wait` seconds have not passed, look again.

    Only a request that does wait takes a place from `hold` (which may refuse it, and whose
    event, once set, ends the wait early: the process is stopping); `read` opens a session
    of its own each time, so no connection is held between looks."""
    deadline = time.monotonic() + wait
    result = await read()
    if result.events or wait <= 0:
        return result
    with hold() as stopping:
        while not result.events and time.monotonic() < deadline:
            if stopping is not None and stopping.is_set():
                break
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            result = await read()
    return result
