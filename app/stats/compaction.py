"""Folding counter shards together once their hour is over.

Concurrent writers spread an hour's counts over several rows (counters.SHARDS) so that they do
not wait on each other's row locks; once the hour has passed nobody competes for it, and one
row per (account, category, hour) makes the dashboards' queries read an eighth of the rows.

The shard rows are deleted with RETURNING and their values added to shard 0 in the same
transaction. A writer that updated a shard row first makes the DELETE wait and return the
updated values; one that inserts a shard row afterwards leaves a row the next run folds. So
no count is lost, whatever runs at the same time."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.stats import counters
from app.stats.models import METRICS, StatsCounter

BATCH = 5000


async def compact(session: AsyncSession, *, before: datetime, limit: int = BATCH) -> int:
    """Fold shard rows of hours before `before` into shard 0; returns rows folded. The caller
    commits."""
    table = StatsCounter.__table__.c
    keys = (
        select(table.account_id, table.category, table.hour, table.shard)
        .where(table.hour < before, table.shard != 0)
        .limit(limit)
    )
    removed = await session.execute(
        delete(StatsCounter)
        .where(tuple_(table.account_id, table.category, table.hour, table.shard).in_(keys))
        .returning(table.account_id, table.category, table.hour, *(table[m] for m in METRICS))
    )
    totals: dict[counters.Key, Counter[str]] = {}
    folded = 0
    for row in removed:
        folded += 1
        values = {metric: int(row._mapping[metric] or 0) for metric in METRICS}
        totals.setdefault((row.account_id, row.category, row.hour), Counter()).update(values)
    if totals:
        await counters.add(session, totals, shard=0)
    return folded
