"""Reading the counters: metrics per hour, day, week or month, overall or per category."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.stats.dimensions import MARK
from app.stats.models import ALL_CATEGORIES, METRICS, StatsCounter

MAX_PERIODS = 5000  # e.g. 208 days of hours; beyond that ask for days


class Granularity(StrEnum):
    """How periods are cut (UTC; weeks start on Monday, as in ISO 8601)."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def period_start(moment: datetime, granularity: Granularity) -> datetime:
    """The start of the period `moment` falls in."""
    hour = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if granularity is Granularity.HOUR:
        return hour
    day = hour.replace(hour=0)
    if granularity is Granularity.DAY:
        return day
    if granularity is Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_period(start: datetime, granularity: Granularity) -> datetime:
    """The start of the period after the one starting at `start`."""
    if granularity is Granularity.MONTH:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    steps = {Granularity.HOUR: 1, Granularity.DAY: 24, Granularity.WEEK: 24 * 7}
    return start + timedelta(hours=steps[granularity])


def periods(start: datetime, end: datetime, granularity: Granularity) -> list[datetime]:
    """Every period start from the one holding `start` up to (not including) `end`.

    Raises ValueError for an empty or over-long range."""
    if end <= start:
        raise ValueError("end must be after start")
    found, current = [], period_start(start, granularity)
    while current < end:
        found.append(current)
        if len(found) > MAX_PERIODS:
            raise ValueError(
                f"the range holds more than {MAX_PERIODS} {granularity.value}s; "
                "shorten it or use a coarser granularity"
            )
        current = next_period(current, granularity)
    return found


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime.combine(day, time(), tzinfo=UTC)


Metrics = dict[str, int]
Values = tuple[int, ...]  # one int per metric, in METRICS order


async def hourly(
    session: AsyncSession,
    *,
    account_id: str,
    categories: Sequence[str],
    start: datetime,
    end: datetime,
) -> dict[tuple[str, datetime], Values]:
    """Counters summed over shards per (category, hour) in [start, end)."""
    columns = [func.sum(getattr(StatsCounter, metric)) for metric in METRICS]
    query = (
        select(StatsCounter.category, StatsCounter.hour, *columns)
        .where(
            StatsCounter.account_id == account_id,
            StatsCounter.category.in_(list(categories)),
            StatsCounter.hour >= start,
            StatsCounter.hour < end,
        )
        .group_by(StatsCounter.category, StatsCounter.hour)
    )
    result = await session.execute(query)
    return {(row[0], row[1]): tuple([int(v) if v else 0 for v in row[2:]]) for row in result}


async def series(
    session: AsyncSession,
    *,
    account_id: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    categories: Sequence[str] = (ALL_CATEGORIES,),
) -> list[tuple[datetime, dict[str, Metrics]]]:
    """For every period in range: each category's metrics (zeros where nothing happened)."""
    starts = periods(start, end, granularity)
    first_hour = period_start(start, Granularity.HOUR)  # counters are kept per hour
    rows = await hourly(
        session, account_id=account_id, categories=categories, start=first_hour, end=end
    )
    sums: dict[tuple[str, datetime], list[int] | Values] = {}
    if granularity is Granularity.HOUR:
        sums.update(rows)  # counters are hourly already
    for (category, hour), values in rows.items() if granularity is not Granularity.HOUR else ():
        key = (category, period_start(hour, granularity))
        found = sums.get(key)
        if found is None:
            sums[key] = list(values)
        else:
            sums[key] = [a + b for a, b in zip(found, values, strict=True)]
    zero = [0] * len(METRICS)
    return [
        (
            period,
            {
                category: dict(zip(METRICS, sums.get((category, period), zero), strict=True))
                for category in categories
            },
        )
        for period in starts
    ]


def _is_category() -> ColumnElement[bool]:
    """Rows of a category: neither all mail ('') nor a dimension (app.stats.dimensions)."""
    return and_(StatsCounter.category != ALL_CATEGORIES, ~StatsCounter.category.startswith(MARK))


async def category_names(
    session: AsyncSession, *, account_id: str, prefix: str | None, limit: int, offset: int
) -> list[str]:
    """The account's categories (every one ever counted), sorted, optionally by prefix."""
    query = (
        select(StatsCounter.category)
        .distinct()
        .where(StatsCounter.account_id == account_id, _is_category())
    )
    if prefix:
        query = query.where(StatsCounter.category.startswith(prefix, autoescape=True))
    query = query.order_by(StatsCounter.category).limit(limit).offset(offset)
    return list((await session.execute(query)).scalars())


async def category_sums(
    session: AsyncSession, *, account_id: str, start: datetime, end: datetime
) -> dict[str, Metrics]:
    """Each category's metrics summed over [start, end) (categories with counters only)."""
    columns = [func.sum(getattr(StatsCounter, metric)) for metric in METRICS]
    query = (
        select(StatsCounter.category, *columns)
        .where(
            StatsCounter.account_id == account_id,
            _is_category(),
            StatsCounter.hour >= start,
            StatsCounter.hour < end,
        )
        .group_by(StatsCounter.category)
    )
    result = await session.execute(query)
    return {
        row[0]: dict(zip(METRICS, (int(v) if v else 0 for v in row[1:]), strict=True))
        for row in result
    }


async def keys_like(
    session: AsyncSession, *, account_id: str, prefix: str, start: datetime, end: datetime
) -> dict[tuple[str, datetime], Values]:
    """Counters summed over shards per (key, hour) in [start, end), for keys by prefix."""
    columns = [func.sum(getattr(StatsCounter, metric)) for metric in METRICS]
    query = (
        select(StatsCounter.category, StatsCounter.hour, *columns)
        .where(
            StatsCounter.account_id == account_id,
            StatsCounter.category.startswith(prefix, autoescape=True),
            StatsCounter.hour >= start,
            StatsCounter.hour < end,
        )
        .group_by(StatsCounter.category, StatsCounter.hour)
    )
    result = await session.execute(query)
    return {(row[0], row[1]): tuple([int(v) if v else 0 for v in row[2:]]) for row in result}
