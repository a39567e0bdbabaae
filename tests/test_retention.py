"""Retention (app.retention.service, the worker's hourly purge): old finished mail goes with
everything that hangs off it; unfinished mail, recent mail, counters and suppressions stay."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import ColumnElement, func, select

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.events import service as events
from app.events.models import Event, EventType
from app.messages.models import Attempt, Recipient
from app.retention import service as retention
from app.stats.models import StatsCounter
from app.webhooks.models import BatchState, Webhook, WebhookAttempt, WebhookBatch
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, run_job
from tests.test_end_to_end import send
from worker import jobs

Deliver = Callable[[], Awaitable[int]]


async def count(db: Database, column: Any, *conditions: ColumnElement[bool]) -> int:
    """Rows matching `conditions`."""
    async with db.session() as session:
        query = select(func.count(column)).where(*conditions)
        return int((await session.execute(query)).scalar_one())


async def purge(db: Database, settings: Settings, limit: int = 1000) -> retention.Purged:
    """Purge everything past the retention period, a batch of `limit` at a time."""
    return await retention.run_batches(
        db,
        retention.purge_batch,
        before=clock.now() - settings.retention,
        limit=limit,
        max_batches=1000,
    )


async def add_webhook_batches(db: Database, account_id: str) -> tuple[str, str]:
    """A finished (delivered) batch with an attempt and a pending one; their ids."""
    async with db.session() as session:
        hook = Webhook(account_id=account_id, url="https://hooks.example.test/", secret=b"x")
        session.add(hook)
        await session.flush()
        finished = WebhookBatch(
            id="msg_finished",
            webhook_id=hook.id,
            account_id=account_id,
            state=BatchState.DELIVERED,
            event_count=0,
            completed_at=clock.now(),
        )
        pending = WebhookBatch(
            id="msg_pending", webhook_id=hook.id, account_id=account_id, event_count=0
        )
        session.add_all([finished, pending])
        await session.flush()
        session.add(WebhookAttempt(webhook_id=hook.id, batch_id=finished.id, attempt=1))
        await session.commit()
    return finished.id, pending.id


async def test_old_finished_mail_goes_and_unfinished_mail_stays(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    db: Database,
    settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:
    delivered = await send(client, sender, to=["alice@example.test"])
    await deliver()
    mx.reply_at("RCPT", 450, "4.2.1 mailbox busy, try later", times=1)
    deferred = await send(client, sender, to=["bob@example.test"])
    await deliver()
    account_id = sender.account_id
    async with db.session() as session:
        await events.record(
            session, [events.NewEvent(account_id=account_id, type=EventType.WEBHOOK_DISABLED)]
        )
        await session.commit()
    finished_batch, pending_batch = await add_webhook_batches(db, account_id)
    counters_before = await count(db, StatsCounter.account_id)

    # Within the retention period nothing goes.
    assert (await purge(db, settings)).total == 0

    travel(settings.retention + timedelta(days=1))
    recent = await send(client, sender, to=["carol@example.test"])
    purged = await purge(db, settings, limit=1)  # one row per batch: the loop must go on

    assert purged["messages"] == 1
    assert purged["recipients"] == 1
    assert purged["webhook_batches"] == 1
    assert purged["events"] == 3  # processed, delivered, and the webhook_disabled of none
    headers = sender.headers
    gone = await client.get(f"/v1/messages/{delivered['id']}", headers=headers)
    assert gone.status_code == 404
    for kept in (deferred, recent):
        response = await client.get(f"/v1/messages/{kept['id']}", headers=headers)
        assert response.status_code == 200, response.text
    # The delivered message's recipients, attempts and events went with it (cascade).
    assert await count(db, Recipient.id, Recipient.message_id == delivered["id"]) == 0
    assert await count(db, Attempt.id, Attempt.message_id == delivered["id"]) == 0
    assert await count(db, Event.id, Event.message_id == delivered["id"]) == 0
    assert await count(db, Event.id, Event.message_id.is_(None)) == 0
    # The deferred message keeps its history: it will be tried again.
    assert await count(db, Attempt.id, Attempt.message_id == deferred["id"]) == 1
    assert await count(db, WebhookBatch.id, WebhookBatch.id == finished_batch) == 0
    assert await count(db, WebhookAttempt.id, WebhookAttempt.batch_id == finished_batch) == 0
    assert await count(db, WebhookBatch.id, WebhookBatch.id == pending_batch) == 1
    # Dashboards keep their numbers.
    assert await count(db, StatsCounter.account_id) >= counters_before


async def test_retention_zero_keeps_everything(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    db: Database,
    settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:
    accepted = await send(client, sender, to=["alice@example.test"])
    await deliver()
    travel(timedelta(days=400))
    keep_all = settings.model_copy(update={"retention": timedelta(0)})
    assert await run_job(keep_all, jobs.purge_expired_data) == 0
    headers = sender.headers
    kept = await client.get(f"/v1/messages/{accepted['id']}", headers=headers)
    assert kept.status_code == 200


async def test_the_worker_job_purges_past_the_retention_period(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:
    accepted = await send(client, sender, to=["alice@example.test"])
    await deliver()
    travel(settings.retention + timedelta(hours=1))
    assert await run_job(settings, jobs.purge_expired_data) >= 1
    headers = sender.headers
    gone = await client.get(f"/v1/messages/{accepted['id']}", headers=headers)
    assert gone.status_code == 404


def test_retention_shorter_than_webhook_retries_is_refused() -> None:
    with pytest.raises(ValidationError, match="COLUMBA_RETENTION"):
        Settings(retention=timedelta(days=1), webhook_retry_period=timedelta(days=3))
    assert Settings(retention=timedelta(0)).retention == timedelta(0)
