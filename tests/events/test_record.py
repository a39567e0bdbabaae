"""events.record(): a thousand events cost a handful of statements, counters and outbox included."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from app.core.db import Database
from app.events import service as events
from app.events.models import Event, EventType
from app.stats.models import StatsCounter
from app.webhooks.models import WebhookOutbox
from tests.support import Sender, statements_run
from tests.test_end_to_end import send


async def test_a_thousand_events_take_a_few_statements(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    accepted = await send(client, sender, to=["a@example.test"], categories=["bulk"])
    for url in ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"):
        response = await client.post("/v1/webhooks", json={"url": url}, headers=sender.headers)
        assert response.status_code == 201
    new = [
        events.NewEvent(
            account_id=sender.account_id,
            type=EventType.DELIVERED,
            message_id=accepted["id"],
            data={"email": f"user{i}@example.test"},
        )
        for i in range(1000)
    ]
    with statements_run(db) as run:
        async with db.session() as session:
            ids = await events.record(session, new)
            await session.commit()
    statements = [statement.split()[0] for statement in run]
    assert len(ids) == 1000
    assert len(statements) <= 8, statements
    async with db.session() as session:
        outbox = await session.scalar(select(func.count()).select_from(WebhookOutbox))
        delivered = await session.scalar(
            select(func.sum(StatsCounter.delivered)).where(StatsCounter.category == "bulk")
        )
        stored = await session.scalar(select(func.count()).select_from(Event))
    assert outbox == 2 * 1000  # the endpoints were added after the send's `processed` event
    assert delivered == 1000
    assert stored == 1001


async def test_outbox_rows_name_the_right_events(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    """Each recorded event's id is matched to its own row: an endpoint that wants only
    bounces gets exactly the bounce events of a mixed call."""
    response = await client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["bounced"]},
        headers=sender.headers,
    )
    assert response.status_code == 201
    kinds = [EventType.DELIVERED, EventType.BOUNCED, EventType.DEFERRED] * 400
    new = [
        events.NewEvent(account_id=sender.account_id, type=kind, data={"n": n})
        for n, kind in enumerate(kinds)
    ]
    async with db.session() as session:
        ids = await events.record(session, new)
        await session.commit()
        queued = list(
            (
                await session.execute(
                    select(Event.type, Event.data).join(
                        WebhookOutbox, WebhookOutbox.event_id == Event.id
                    )
                )
            ).all()
        )
        found = await session.execute(select(Event.id, Event.data).where(Event.id.in_(ids)))
        stored: dict[int, dict[str, Any]] = {row.id: row.data for row in found}
    assert {row.type for row in queued} == {"bounced"}
    assert sorted(row.data["n"] for row in queued) == list(range(1, 1200, 3))
    assert [stored[event_id]["n"] for event_id in ids] == list(range(1200))
