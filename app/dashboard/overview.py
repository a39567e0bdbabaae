"""The overview page's figures: counters per period, delivery rate, latency and the queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, ids
from app.messages.models import Attempt, Message, Recipient, RecipientStatus
from app.stats import service as stats
from app.stats.models import ALL_CATEGORIES
from app.stats.service import Granularity

CHART_METRICS = ("requests", "delivered", "deferred", "bounces", "opens", "clicks")
LATENCY_SAMPLE = 1000  # the newest deliveries the percentiles are taken over
_QUEUED = (RecipientStatus.QUEUED, RecipientStatus.DEFERRED, RecipientStatus.SCHEDULED)


class Range(StrEnum):
    """The ranges the overview offers, each with the granularity that suits it."""

    DAY = "24h"
    WEEK = "7d"
    MONTH = "30d"

    @property
    def span(self) -> timedelta:
        """How far back the range reaches."""
        return {"24h": timedelta(hours=24), "7d": timedelta(days=7)}.get(
            self.value, timedelta(days=30)
        )

    @property
    def granularity(self) -> Granularity:
        """Hours for a day or a week, days for a month."""
        return Granularity.DAY if self is Range.MONTH else Granularity.HOUR


@dataclass(frozen=True, slots=True)
class Series:
    """One chart: period starts (Unix seconds) and one list of values per metric."""

    times: list[int]
    values: dict[str, list[int]]

    def total(self, metric: str) -> int:
        """The metric summed over the range."""
        return sum(self.values[metric])


@dataclass(frozen=True, slots=True)
class QueueNow:
    """Recipients waiting now: due (may be sent at once), deferred (after a failure, waiting
    for their retry) and scheduled (a send_at in the future)."""

    due: int
    deferred: int
    scheduled: int


@dataclass(frozen=True, slots=True)
class Latency:
    """Accept → 250 percentiles in seconds over `sample` of the newest deliveries."""

    sample: int
    p50: float | None
    p90: float | None
    p99: float | None


async def series(session: AsyncSession, *, account_id: str, chosen: Range) -> Series:
    """The chart's counters, zeros where nothing happened."""
    end = clock.now()
    rows = await stats.series(
        session,
        account_id=account_id,
        start=end - chosen.span,
        end=end,
        granularity=chosen.granularity,
    )
    values: dict[str, list[int]] = {metric: [] for metric in CHART_METRICS}
    for _, by_category in rows:
        metrics = by_category[ALL_CATEGORIES]
        for metric in CHART_METRICS:
            values[metric].append(metrics[metric])
    return Series([int(start.timestamp()) for start, _ in rows], values)


def delivery_rate(chart: Series) -> float | None:
    """Delivered over the recipients that reached an outcome (delivered or bounced)."""
    done = chart.total("delivered") + chart.total("bounces")
    return None if done == 0 else chart.total("delivered") / done


async def queue_now(session: AsyncSession, *, account_id: str) -> QueueNow:
    """Waiting recipients. Counts by status come from ix_recipients_search_status alone
    (an index-only scan, however many delivered rows the account has); only the deferred
    ones still waiting for their retry are read further, through ix_recipients_due."""
    by_status = dict(
        (status, count)
        for status, count in await session.execute(
            select(Recipient.status, func.count())
            .where(Recipient.account_id == account_id, Recipient.status.in_(_QUEUED))
            .group_by(Recipient.status)
        )
    )
    waiting = await session.scalar(
        select(func.count()).where(
            Recipient.status == RecipientStatus.DEFERRED,
            Recipient.next_attempt_at > clock.now(),
            Recipient.account_id == account_id,
        )
    )
    deferred = int(waiting or 0)
    due = by_status.get(RecipientStatus.QUEUED, 0) + by_status.get(RecipientStatus.DEFERRED, 0)
    return QueueNow(due - deferred, deferred, by_status.get(RecipientStatus.SCHEDULED, 0))


async def latency(session: AsyncSession, *, account_id: str, since: datetime) -> Latency:
    """Percentiles of accept → 250 over the deliveries of the newest LATENCY_SAMPLE messages
    since `since`. Two bounded steps: message ids are in acceptance order, so
    ix_messages_search yields the newest at once; their attempts come by ix_attempts_message_id
    (one join would let the planner read every attempt of the account)."""
    low = ids.encode(max(0, int(since.timestamp() * 1000)) << 80)
    newest = (
        select(Message.id, Message.created_at)
        .where(Message.account_id == account_id, Message.id >= low)
        .order_by(Message.id.desc())
        .limit(LATENCY_SAMPLE)
    )
    accepted = {row[0]: row[1] for row in await session.execute(newest)}
    if not accepted:
        return Latency(0, None, None, None)
    attempts = select(Attempt.message_id, Attempt.started_at, Attempt.duration_ms).where(
        Attempt.message_id.in_(list(accepted)), Attempt.outcome == "delivered"
    )
    seconds = sorted(
        max(0.0, (started - accepted[message_id]).total_seconds() + duration / 1000)
        for message_id, started, duration in await session.execute(attempts)
    )
    return Latency(len(seconds), *(_percentile(seconds, q) for q in (0.5, 0.9, 0.99)))


def _percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank percentile of an ordered list; None when it is empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
