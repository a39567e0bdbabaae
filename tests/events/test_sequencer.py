"""The feed sequencer run by several processes at once: every committed event gets exactly
one position, positions never collide and leave no gap."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import Database
from app.events import sequencer
from app.events import service as events
from app.events.models import Event, EventType
from tests.support import Sender
from tests.test_end_to_end import send

ROUNDS = 40


async def _record_and_sequence(
    database: Database, sender: Sender, message_id: str, writer: int
) -> None:
    """Rounds of: record a few events, then number whatever is waiting (as each worker's
    sequence_events job and each long poll do)."""
    for round_ in range(ROUNDS):
        async with database.session() as session:
            await events.record(
                session,
                [
                    events.NewEvent(
                        account_id=sender.account_id,
                        type=EventType.DELIVERED,
                        message_id=message_id,
                        data={"email": f"w{writer}r{round_}n{n}@example.test"},
                    )
                    for n in range(3)
                ],
            )
            await session.commit()
        async with database.session() as session:
            await sequencer.sequence(session)
            await session.commit()


async def test_concurrent_sequencers_give_each_event_one_unique_position(
    client: httpx.AsyncClient, sender: Sender, settings: Settings
) -> None:
    accepted = await send(client, sender, to=["a@example.test"])
    # One engine per "process": its own connections, as two workers or API processes have.
    databases = [Database(settings) for _ in range(3)]
    try:
        async with databases[0].session() as session:
            before = int(
                await session.scalar(select(func.coalesce(func.max(Event.position), 0))) or 0
            )
        await asyncio.gather(
            *(
                _record_and_sequence(database, sender, accepted["id"], writer)
                for writer, database in enumerate(databases)
            )
        )
        async with databases[0].session() as session:
            while await sequencer.sequence(session):
                await session.commit()
            ours = list(
                (
                    await session.scalars(
                        select(Event.position).where(Event.message_id == accepted["id"])
                    )
                ).all()
            )
            later = select(Event.position).where(Event.position > before)
            positions = [p for p in (await session.scalars(later)).all() if p is not None]
    finally:
        for database in databases:
            await database.dispose()
    assert len(ours) == 1 + 3 * 3 * ROUNDS  # the send's processed event and every recorded one
    assert None not in ours
    # Positions handed out meanwhile: once each, without a gap. (On PostgreSQL they follow
    # commit order, not ids: the reason they exist.)
    assert sorted(positions) == list(range(before + 1, before + len(positions) + 1))
