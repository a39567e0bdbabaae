"""Keeping the counters: each event adds to SendGrid's metrics for its account, UTC hour and
categories, in the transaction that writes the event (one upsert per `record()` call)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.delivery.classify import BounceKind, classify
from app.delivery.replies import Reply
from app.events.models import EventType
from app.events.recorded import RecordedEvent
from app.stats import dimensions
from app.stats.models import ALL_CATEGORIES, METRICS, StatsCounter

# On PostgreSQL, concurrent transactions that count for the same account and hour would queue
# on one row lock until they commit; spreading them over a few rows (summed when read) keeps
# workers from waiting on each other. SQLite has one writer at a time: one row is enough.
SHARDS = 8


def shard_count(dialect: str) -> int:
    """How many rows one (account, category, hour) is spread over."""
    return SHARDS if dialect == "postgresql" else 1


# Drop reasons by suppression type: which of SendGrid's drop metrics a drop counts in.
_DROP_METRIC = {
    "bounce": "bounce_drops",
    "complaint": "spam_report_drops",
    "unsubscribe": "unsubscribe_drops",
    "group_unsubscribe": "unsubscribe_drops",  # opted out of the message's group
    "invalid": "invalid_emails",
}
_SIMPLE = {
    EventType.PROCESSED: ("requests", "processed"),
    EventType.DELIVERED: ("delivered",),
    EventType.DEFERRED: ("deferred",),
    EventType.EXPIRED: ("blocks",),  # SendGrid turns mail deferred past its age into a block
    EventType.UNSUBSCRIBED: ("unsubscribes",),
    EventType.GROUP_UNSUBSCRIBED: ("unsubscribes",),
    EventType.COMPLAINED: ("spam_reports",),
}


def metrics_for(event_type: str, data: dict[str, Any]) -> tuple[str, ...]:
    """The metrics one event adds 1 to (none for events SendGrid does not count)."""
    simple = _SIMPLE.get(event_type)  # type: ignore[call-overload]
    if simple is not None:
        return tuple(simple)
    if event_type == EventType.DROPPED:
        reason = _DROP_METRIC.get(str(data.get("suppression", "")))
        return ("requests", "drops", reason) if reason else ("requests", "drops")
    if event_type == EventType.BOUNCED:
        return ("blocks",) if bounce_kind(data) is BounceKind.BLOCK else ("bounces",)
    if event_type == EventType.OPENED:
        if data.get("machine"):  # Apple's proxy or a scanner: counted apart from people's
            return ("machine_opens",)
        return ("opens", "unique_opens") if data.get("unique") else ("opens",)
    if event_type == EventType.CLICKED:
        if data.get("machine"):
            return ("machine_clicks",)
        return ("clicks", "unique_clicks") if data.get("unique") else ("clicks",)
    return ()


def bounce_kind(data: dict[str, Any]) -> BounceKind:
    """A bounce event's kind: as the delivery engine recorded it (`bounce_type`), else
    classified from the event's reply (events written before classification existed)."""
    recorded = str(data.get("bounce_type", ""))
    if recorded in {kind.value for kind in BounceKind}:
        return BounceKind(recorded)
    return classify(reply_of(data)).kind


def reply_of(data: dict[str, Any]) -> Reply:
    """The SMTP reply an event's data describes (a 5xx when it names no code)."""
    code = data.get("code")
    text = str(data.get("response") or data.get("reason") or "")
    parsed = Reply.parse(code if isinstance(code, int) and code >= 400 else 550, text)
    if parsed.enhanced is None and data.get("enhanced_code"):
        return Reply(parsed.code, parsed.text, str(data["enhanced_code"]))
    return parsed


def hour_of(moment: datetime) -> datetime:
    """The UTC hour a moment falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


Key = tuple[str, str, datetime]  # account, category, hour


def tally(events: Iterable[RecordedEvent]) -> dict[Key, Counter[str]]:
    """Metric increments per (account, category, hour); every event counts in the
    all-mail row, in the row of each of its message's categories and in those of its
    mailbox provider and bounce classification (app.stats.dimensions)."""
    totals: dict[Key, Counter[str]] = defaultdict(Counter)
    for event in events:
        metrics = metrics_for(event.type, event.data)
        if not metrics:
            continue
        hour = hour_of(event.created_at)
        categories = dict.fromkeys(c for c in event.categories if c)
        for key in (ALL_CATEGORIES, *categories, *dimensions.keys_of(event)):
            totals[(event.account_id, key, hour)].update(metrics)
    return totals


async def count(session: AsyncSession, events: Sequence[RecordedEvent]) -> None:
    """Add the events to the counters (in the caller's transaction)."""
    await add(session, tally(events))


async def add(
    session: AsyncSession, totals: dict[Key, Counter[str]], *, shard: int | None = None
) -> None:
    """Upsert increments; keys sorted so concurrent writers lock rows in the same order."""
    if not totals:
        return
    dialect = session.get_bind().dialect.name
    if shard is None:
        # One shard per transaction: a transaction that counts twice touches rows of one
        # shard only, so two such transactions cannot lock each other's rows in opposite orders.
        shard = session.info.setdefault("stats_shard", random.randrange(shard_count(dialect)))
    now = clock.now()
    rows = [
        {
            "account_id": account_id,
            "category": category,
            "hour": hour,
            "shard": shard,
            "updated_at": now,
            **{metric: increments.get(metric, 0) for metric in METRICS},
        }
        for (account_id, category, hour), increments in sorted(totals.items())
    ]
    # One cached statement run with many parameter sets: SQLAlchemy compiles it once per
    # process, where a multi-row VALUES would be compiled again on every call.
    await session.execute(_upsert(dialect), rows)


@cache
def _upsert(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO UPDATE adding each metric to the stored one."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Core (the table, not the mapped class): the ORM's bulk INSERT path costs CPU per call.
    counters: Table = StatsCounter.__table__  # type: ignore[assignment]
    statement = insert(counters)
    table = counters.c
    return statement.on_conflict_do_update(
        index_elements=["account_id", "category", "hour", "shard"],
        set_={
            "updated_at": statement.excluded.updated_at,
            **{metric: table[metric] + statement.excluded[metric] for metric in METRICS},
        },
    )
