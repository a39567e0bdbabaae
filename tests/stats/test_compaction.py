"""Folding counter shards of past hours: fewer rows, the same totals, nothing lost to races."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import func, select

from app.core import clock
from app.core.db import Database
from app.stats import compaction, counters
from app.stats.models import ALL_CATEGORIES, StatsCounter
from app.stats.service import Granularity, series
from tests.support import Sender


async def _count(db: Database, account_id: str, hour: datetime, shard: int, n: int = 1) -> None:
    """Add `n` deliveries in one transaction, on a chosen shard."""
    async with db.session() as session:
        totals = {(account_id, ALL_CATEGORIES, hour): Counter(delivered=n)}
        await counters.add(session, totals, shard=shard)
        await session.commit()


async def _delivered(db: Database, account_id: str, hours: int) -> list[int]:
    """Delivered per hour over the last `hours` hours."""
    now = clock.now()
    async with db.session() as session:
        rows = await series(
            session,
            account_id=account_id,
            start=now - timedelta(hours=hours),
            end=now + timedelta(hours=1),
            granularity=Granularity.HOUR,
        )
    return [per[ALL_CATEGORIES]["delivered"] for _, per in rows]


async def _rows(db: Database) -> int:
    """How many counter rows exist."""
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(StatsCounter)) or 0)


async def test_past_hours_fold_into_one_row_and_totals_stay(sender: Sender, db: Database) -> None:
    this_hour = clock.now().replace(minute=0, second=0, microsecond=0)
    past = this_hour - timedelta(hours=2)
    for shard in range(counters.SHARDS):
        await _count(db, sender.account_id, past, shard, n=shard + 1)
        await _count(db, sender.account_id, this_hour, shard)
    before = await _delivered(db, sender.account_id, 3)
    assert await _rows(db) == 2 * counters.SHARDS
    async with db.session() as session:
        folded = await compaction.compact(session, before=this_hour)
        await session.commit()
    assert folded == counters.SHARDS - 1
    assert await _rows(db) == 1 + counters.SHARDS  # the current hour is left alone
    assert await _delivered(db, sender.account_id, 3) == before
    assert before[1] == sum(range(1, counters.SHARDS + 1))


async def test_writers_racing_the_compaction_lose_nothing(sender: Sender, db: Database) -> None:
    past = clock.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)

    async def writer(shard: int) -> None:
        """Twenty one-count transactions on one shard."""
        for _ in range(20):
            await _count(db, sender.account_id, past, shard)

    async def compactor() -> None:
        """Compaction runs interleaved with the writers."""
        for _ in range(20):
            async with db.session() as session:
                await compaction.compact(session, before=past + timedelta(hours=1))
                await session.commit()
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(shard) for shard in range(1, 5)), compactor())
    async with db.session() as session:
        await compaction.compact(session, before=past + timedelta(hours=1))
        await session.commit()
    assert (await _delivered(db, sender.account_id, 2))[1] == 80
    assert await _rows(db) == 1
