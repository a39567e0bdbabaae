"""The text a scrape gets: this process's metrics (or every worker process's, added up), and
the queue as the database holds it, read at scrape time and cached for a few seconds."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import case, func, literal, select, union_all

from app.core import clock
from app.core.db import Database
from app.messages.models import CLAIMABLE_STATUSES, Recipient, RecipientStatus
from app.webhooks.models import BatchState, WebhookBatch, WebhookOutbox

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUE_CACHE_SECONDS = 5.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def process_metrics() -> bytes:
    """This process's metrics; with PROMETHEUS_MULTIPROC_DIR, those of every process writing
    to that directory (the uvicorn workers of one `columba api`), added up."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Recipients waiting, by state; the age of the oldest due one; the webhook backlog."""

    due: int = 0
    deferred: int = 0
    scheduled: int = 0
    sending: int = 0
    oldest_due_seconds: float = 0.0
    webhook_backlog: int = 0


class QueueCollector:
    """The snapshot as gauges (a prometheus-client custom collector)."""

    def __init__(self, snapshot: QueueSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """columba_queue_recipients{state}, the oldest due age and the outbox backlog."""
        snap = self.snapshot
        queue = GaugeMetricFamily(
            "columba_queue_recipients",
            "Recipients waiting for delivery, by state: due now, deferred (a retry later), "
            "scheduled (send_at later), sending (leased by a worker).",
            labels=["state"],
        )
        for state in ("due", "deferred", "scheduled", "sending"):
            queue.add_metric([state], getattr(snap, state))
        yield queue
        yield GaugeMetricFamily(
            "columba_queue_oldest_due_age_seconds",
            "How long the longest-waiting due recipient has been due (0 when none is).",
            value=snap.oldest_due_seconds,
        )
        yield GaugeMetricFamily(
            "columba_webhook_outbox_backlog",
            "Events owed to webhook endpoints and not yet delivered.",
            value=snap.webhook_backlog,
        )


@dataclass
class QueueProbe:
    """Reads the snapshot with one statement, at most every QUEUE_CACHE_SECONDS."""

    database: Database
    ttl: float = QUEUE_CACHE_SECONDS
    _snapshot: QueueSnapshot | None = None
    _read_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def snapshot(self) -> QueueSnapshot:
        """The cached snapshot, read again when older than the ttl."""
        async with self._lock:  # concurrent scrapes share one read
            if self._snapshot is None or time.monotonic() - self._read_at > self.ttl:
                self._snapshot = await read_queue(self.database, clock.now())
                self._read_at = time.monotonic()
            return self._snapshot

    async def render(self) -> bytes:
        """The queue gauges in the text format."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(QueueCollector(await self.snapshot()))
        return generate_latest(registry)


async def read_queue(database: Database, now: datetime) -> QueueSnapshot:
    """One statement: recipients by (status, due) over the (status, next_attempt_at) index,
    and the webhook outbox's unbatched rows plus the events of batches still pending."""
    waiting = (*CLAIMABLE_STATUSES, RecipientStatus.SENDING)
    is_due = case((Recipient.next_attempt_at <= now, 1), else_=0)
    recipients = (
        select(
            Recipient.status.label("kind"),
            is_due.label("due"),
            func.count().label("n"),
            func.min(Recipient.next_attempt_at).label("oldest"),
        )
        .where(Recipient.status.in_(waiting))
        .group_by(Recipient.status, is_due)
    )
    unbatched = select(
        literal("outbox").label("kind"), literal(0), func.count(), literal(None)
    ).where(WebhookOutbox.batch_id.is_(None))
    pending = select(
        literal("batches").label("kind"),
        literal(0),
        func.coalesce(func.sum(WebhookBatch.event_count), 0),
        literal(None),
    ).where(WebhookBatch.state == BatchState.PENDING)
    async with database.session() as session:
        rows = (await session.execute(union_all(recipients, unbatched, pending))).all()
    return _snapshot_of([(r[0], r[1], r[2], r[3]) for r in rows], now)


def _snapshot_of(rows: list[tuple[str, int, int, Any]], now: datetime) -> QueueSnapshot:
    """Fold the statement's rows into a snapshot."""
    counts = {"due": 0, "deferred": 0, "scheduled": 0, "sending": 0, "backlog": 0}
    oldest: datetime | None = None
    for kind, due, n, first in rows:
        if kind in ("outbox", "batches"):
            counts["backlog"] += int(n)
        elif kind == RecipientStatus.SENDING:
            counts["sending"] += int(n)
        elif due:
            counts["due"] += int(n)
            oldest = first if oldest is None or (first and first < oldest) else oldest
        else:
            counts["scheduled" if kind == RecipientStatus.SCHEDULED else "deferred"] += int(n)
    age = max(0.0, (now - _aware(oldest)).total_seconds()) if oldest is not None else 0.0
    return QueueSnapshot(
        due=counts["due"],
        deferred=counts["deferred"],
        scheduled=counts["scheduled"],
        sending=counts["sending"],
        oldest_due_seconds=age,
        webhook_backlog=counts["backlog"],
    )


def _aware(moment: datetime | str) -> datetime:
    """A datetime from a UNION (no column type to convert it) as an aware UTC one."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=clock.now().tzinfo)
