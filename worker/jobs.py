"""arq job functions: thin wrappers over the worker Runtime."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from app.batches import service as batches
from app.core import clock
from app.core.config import Settings
from app.core.queue import Queue
from app.events import sequencer
from app.idempotency import service as idempotency
from app.retention import service as retention
from app.stats import compaction
from app.webhooks.dispatcher import Dispatcher
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def _runtime(ctx: dict[str, Any]) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


async def deliver_message(ctx: dict[str, Any], message_id: str) -> None:
    """A wake-up kept for compatibility (the API now publishes on app.core.queue's
    WAKE_CHANNEL): the pump claims whatever is due, so the job returns at once."""
    _runtime(ctx).wake()


async def sweep_due_recipients(ctx: dict[str, Any]) -> int:
    """While the database holds due recipients (queued or deferred and due, or leased by a
    worker that died), wake this worker's pump and publish a wake-up for every other: Redis
    may lose signals, the database never loses recipients. Returns 1 when it woke them."""
    runtime = _runtime(ctx)
    if not await runtime.sweep():
        return 0
    runtime.wake()
    queue: Queue = ctx["queue"]
    await queue.wake_workers()
    return 1


async def dispatch_webhooks(ctx: dict[str, Any]) -> int:
    """Deliver due webhook batches (issue 5; the logic lives in app.webhooks.dispatcher)."""
    dispatcher: Dispatcher = ctx["webhooks"]
    return await dispatcher.run()


async def sequence_events(ctx: dict[str, Any]) -> int:
    """Give newly committed events their feed positions (app.events.sequencer)."""
    async with _runtime(ctx).db.session() as session:
        numbered = await sequencer.sequence(session)
        await session.commit()
    return numbered


async def compact_stats(ctx: dict[str, Any]) -> int:
    """Fold the counter shards of past hours into one row each (app.stats.compaction)."""
    before = clock.now().replace(minute=0, second=0, microsecond=0)
    async with _runtime(ctx).db.session() as session:
        folded = await compaction.compact(session, before=before)
        await session.commit()
    return folded


# Rows per transaction, cascades included. PostgreSQL locks only the rows deleted (old mail
# nothing else touches), so a batch there is sized for short transactions and small WAL
# bursts; SQLite has one write lock for the whole database, which every send's commit waits
# for while a batch holds it: a quarter of the rows keeps that wait to a few milliseconds.
RETENTION_BATCH = 1000
RETENTION_BATCH_SQLITE = 250
RETENTION_MAX_BATCHES = 1000  # per run; what is left goes in the next hour's run
RETENTION_PAUSE = 0.01  # seconds between batches, for the other writers of a SQLite database


async def purge_expired_data(ctx: dict[str, Any]) -> int:
    """Remove the content of finished messages past COLUMBA_CONTENT_RETENTION, then delete
    what is older than COLUMBA_RETENTION (app.retention), a batch per transaction."""
    settings = _runtime(ctx).settings
    now = clock.now()
    purged = retention.Purged()
    if settings.content_retention_period:
        purged += await _purge(
            ctx, retention.purge_content_batch, now - settings.content_retention_period
        )
    if settings.retention:
        purged += await _purge(ctx, retention.purge_batch, now - settings.retention)
    if purged.total:
        log.info("retention: %s", purged)
    return purged.total


def retention_batch(settings: Settings) -> int:
    """Rows per purge transaction on the configured database."""
    return RETENTION_BATCH_SQLITE if settings.is_sqlite else RETENTION_BATCH


async def _purge(
    ctx: dict[str, Any], batch: retention.BatchFunction, before: datetime
) -> retention.Purged:
    runtime = _runtime(ctx)
    return await retention.run_batches(
        runtime.db,
        batch,
        before=before,
        limit=retention_batch(runtime.settings),
        max_batches=RETENTION_MAX_BATCHES,
        pause=RETENTION_PAUSE,
    )


EXPIRY_BATCH = 1000  # recipients per transaction


async def expire_paused_recipients(ctx: dict[str, Any]) -> int:
    """Expire recipients left paused PAUSED_EXPIRY past their due time, a batch at a time."""
    runtime = _runtime(ctx)
    due_before = clock.now() - runtime.settings.paused_expiry
    expired = 0
    while True:
        async with runtime.db.session() as session:
            count = await batches.expire_paused(session, due_before=due_before, limit=EXPIRY_BATCH)
            await session.commit()
        expired += count
        if count < EXPIRY_BATCH:
            return expired


async def purge_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Forget Idempotency-Keys past COLUMBA_IDEMPOTENCY_TTL."""
    async with _runtime(ctx).db.session() as session:
        purged = await idempotency.purge_expired(session)
        await session.commit()
    return purged
