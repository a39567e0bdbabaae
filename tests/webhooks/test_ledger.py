"""The dispatcher's bookkeeping (app.webhooks.ledger): a batch is taken by one dispatcher
only, the batch taken ahead of the one in flight never overtakes it, failures are recorded
and retried, and a dispatcher whose lease was taken over records and takes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from app.core import clock
from app.core.config import Settings
from app.core.db import Database, sqlite_path
from app.webhooks import ledger
from app.webhooks.client import PostResult
from app.webhooks.dispatcher import Dispatcher, Outcome, build_dispatcher
from app.webhooks.models import Webhook, WebhookAttempt, WebhookBatch
from tests.fakes.webhooks import WebhookReceiver
from tests.support import Sender
from tests.test_end_to_end import send
from tests.webhooks.conftest import create_webhook, drain_until, hook_url, quick_settings
from tests.webhooks.test_delivery import delivered_ids


def recipients(count: int) -> list[str]:
    """`count` distinct recipient addresses."""
    return [f"user{i}@example.test" for i in range(count)]


async def test_two_dispatchers_never_send_an_event_twice(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    settings: Settings,
    db: Database,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    await send(client, sender, to=recipients(550))
    receiver.stall(0.05, times=6)  # slow answers: the other dispatcher has time to try
    first = build_dispatcher(quick_settings(settings), db)
    second = build_dispatcher(quick_settings(settings), db)
    try:
        for _ in range(50):
            await asyncio.gather(first.run(), second.run())
            if len(delivered_ids(receiver, hook["secret"])) >= 550:
                break
    finally:
        await first.client.close()
        await second.client.close()

    ids = delivered_ids(receiver, hook["secret"])
    assert ids == sorted(set(ids))  # each event once, in order
    assert len(ids) == 550
    assert receiver.most_at_once == 1  # one batch in flight for the endpoint, ever
    assert [len(r.json()["data"]) for r in receiver.requests] == [100] * 5 + [50]


async def test_a_failed_batch_holds_back_the_batch_taken_behind_it(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
    db: Database,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    await send(client, sender, to=recipients(250))
    receiver.answer(200)
    receiver.answer(500, times=2)
    await dispatcher.run()  # the first batch goes through, the second fails

    async with db.session() as session:
        pending = (
            await session.execute(
                select(WebhookBatch).where(WebhookBatch.state == "pending").order_by("id")
            )
        ).scalars()
        failed, ahead = sorted(pending, key=lambda batch: batch.attempt_count, reverse=True)
    # The third batch was taken while the second was in flight; it waits behind it.
    assert (failed.attempt_count, ahead.attempt_count) == (1, 0)
    assert ahead.next_attempt_at >= failed.next_attempt_at

    await drain_until(dispatcher, lambda: len(delivered_ids(receiver, hook["secret"])) >= 250)
    assert [r.answered for r in receiver.requests] == [200, 500, 500, 200, 200]
    webhook_ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert webhook_ids[1] == webhook_ids[2] == webhook_ids[3] == failed.id
    assert webhook_ids[4] == ahead.id
    ids = delivered_ids(receiver, hook["secret"])
    assert ids == sorted(set(ids))
    assert len(ids) == 250

    response = await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=sender.headers)
    attempts = response.json()["deliveries"]  # newest first
    assert [(a["attempt"], a["response_status"]) for a in attempts] == [
        (1, 200),
        (3, 200),
        (2, 500),
        (1, 500),
        (1, 200),
    ]
    assert [a["succeeded"] for a in attempts] == [True, True, False, False, True]
    assert {a["batch_state"] for a in attempts} == {"delivered"}
    state = (await client.get(f"/v1/webhooks/{hook['id']}", headers=sender.headers)).json()
    assert state["consecutive_failures"] == 0


async def test_a_dispatcher_whose_lease_was_taken_over_records_and_takes_nothing(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    settings: Settings,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    await send(client, sender, to=recipients(150))
    stale = build_dispatcher(quick_settings(settings), db)
    fresh = build_dispatcher(quick_settings(settings), db)
    try:
        held = await stale._claim(hook["id"])
        assert held is not None
        taken = (await stale._step(held)).batch
        assert taken is not None
        assert len(taken.events) == 100
        assert await fresh._claim(hook["id"]) is None  # leased
        travel(stale.lease + timedelta(seconds=1))  # the stale holder stalled past its lease
        current = await fresh._claim(hook["id"])
        assert current is not None

        delivered = ledger.Delivered(taken.id, clock.now(), PostResult(200, None, None, 5), 100)
        late = await stale._step(held, delivered=delivered)
        assert (late.held, late.batch) == (False, None)  # neither recorded nor taken

        assert await fresh._deliver(current, deadline=time.monotonic() + 30) == 150
    finally:
        await stale.client.close()
        await fresh.client.close()
    # The batch the stale holder took is sent first, with its webhook-id, then the rest.
    assert [len(r.json()["data"]) for r in receiver.accepted] == [100, 50]
    assert receiver.accepted[0].headers["webhook-id"] == taken.id
    async with db.session() as session:
        attempts = list(
            (
                await session.execute(
                    select(WebhookAttempt.batch_id, WebhookAttempt.attempt).order_by(
                        WebhookAttempt.id
                    )
                )
            ).all()
        )
    assert attempts[0] == (taken.id, 1)  # the stale holder's attempt was never written
    assert len(attempts) == 2


async def test_a_changed_url_applies_from_the_batch_after_the_one_in_flight(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    await send(client, sender, to=recipients(250))
    receiver.stall(0.5)
    running = asyncio.ensure_future(dispatcher.run())
    await receiver.wait_for(1)
    response = await client.patch(
        f"/v1/webhooks/{hook['id']}",
        json={"url": hook_url(receiver, "/moved")},
        headers=sender.headers,
    )
    assert response.status_code == 200, response.text
    await running
    await drain_until(dispatcher, lambda: len(delivered_ids(receiver, hook["secret"])) >= 250)
    paths = [r.path for r in receiver.requests]
    # The batch taken while the first was in flight may have been read before the change.
    assert paths[0] == "/hooks"
    assert paths[2] == "/moved"
    assert len(paths) == 3


async def test_events_in_a_batch_carry_what_the_feed_shows(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    """The bookkeeping reads a batch's events as JSON (PostgreSQL and SQLite alike): times,
    data, categories and metadata come out as the ORM reads them."""
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    await send(
        client,
        sender,
        to=["a@example.test", "b@example.test"],
        categories=["receipt", "eu"],
        metadata={"order": "42", "nested": "ünïcode"},
    )
    await drain_until(dispatcher, lambda: len(delivered_ids(receiver, hook["secret"])) >= 2)
    sent = [e for r in receiver.accepted for e in r.json()["data"]]
    feed = (await client.get("/v1/events?type=processed", headers=sender.headers)).json()
    shown = {event["id"]: event for event in feed["events"]}
    assert len(sent) == 2
    for event in sent:
        assert datetime.fromisoformat(event["created_at"]) == datetime.fromisoformat(
            shown[event["id"]]["created_at"]
        )
        assert event["created_at"].endswith("+00:00")
        assert event["data"] == shown[event["id"]]["data"]
        assert event["email"] == shown[event["id"]]["email"]
        assert event["message_id"] == shown[event["id"]]["message_id"]
        assert event["categories"] == ["receipt", "eu"]
        assert event["metadata"] == {"order": "42", "nested": "ünïcode"}
        assert event["smtp_id"].startswith("<")


async def test_a_batch_is_never_made_under_a_lease_taken_over_after_the_head_was_read(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    settings: Settings,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    """SQLite reads the endpoint's head before the step's first write: a lease taken over in
    between must fence out the batch INSERT itself (the window, replayed statement by
    statement)."""
    path = sqlite_path(settings.database_url)
    if path is None:
        pytest.skip("PostgreSQL takes the step in one statement, under the endpoint's row lock")
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    await send(client, sender, to=recipients(3))
    stale, fresh = (build_dispatcher(quick_settings(settings), db) for _ in range(2))
    try:
        held = await stale._claim(hook["id"])
        assert held is not None
        request = ledger.Request(held.id, held.token, clock.now(), "msg_late", 100)
        params = {f"p_{name}": value for name, value in ledger._pg_params(request).items()}
        engine = ledger.sqlite_engine(str(path), settings.sqlite_synchronous)
        with engine.begin() as connection:  # the stale step has read its head…
            head = connection.execute(ledger._HEAD, params).one()
            travel(stale.lease + timedelta(seconds=1))
            assert await fresh._claim(hook["id"]) is not None  # …the lease moves…
            made = ledger._make(connection, request, {**params, "p_account_id": head.account_id})
        assert made is None  # …and no batch is made under it
    finally:
        await stale.client.close()
        await fresh.client.close()
    async with db.session() as session:
        batch_ids = (await session.execute(select(WebhookBatch.id))).scalars().all()
    assert "msg_late" not in batch_ids


async def test_a_failure_recorded_while_the_endpoint_is_reset_counts_from_the_reset(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    settings: Settings,
    db: Database,
) -> None:
    """SQLite: the failure's bookkeeping takes the write lock before it reads the endpoint,
    so a reset committed while it waited (a PATCH re-enabling the endpoint) is what it counts
    from, not the count it would have read before."""
    path = sqlite_path(settings.database_url)
    if path is None:
        pytest.skip("PostgreSQL: the row lock (FOR NO KEY UPDATE) was always taken first")
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    await send(client, sender, to=recipients(1))
    dispatcher = build_dispatcher(quick_settings(settings), db)
    try:
        endpoint = await dispatcher._claim(hook["id"])
        assert endpoint is not None
        batch = (await dispatcher._step(endpoint)).batch
        assert batch is not None
        engine = ledger.sqlite_engine(str(path), settings.sqlite_synchronous)
        with engine.begin() as earlier:  # five failures already counted
            earlier.execute(
                update(Webhook).where(Webhook.id == hook["id"]).values(consecutive_failures=5)
            )
        with engine.connect() as other:
            other.exec_driver_sql("BEGIN IMMEDIATE")  # another writer holds the lock…
            failure = ledger_outcome()
            recording = asyncio.create_task(dispatcher._record_failure(endpoint, batch, failure))
            await asyncio.sleep(0.3)  # …while the failure waits for it
            other.execute(
                update(Webhook).where(Webhook.id == hook["id"]).values(consecutive_failures=0)
            )
            other.commit()
        await asyncio.wait_for(recording, 30)
    finally:
        await dispatcher.client.close()
    async with db.session() as session:
        assert (await session.get_one(Webhook, hook["id"])).consecutive_failures == 1


def ledger_outcome() -> Outcome:
    """A 500 from the endpoint, just now."""
    return Outcome(clock.now(), PostResult(500, None, None, 5))
