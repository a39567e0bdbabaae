"""Webhook delivery to a real HTTP receiver: signed batches, retries, 410, redirects, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook as StandardWebhook

from app.core.config import Settings
from app.core.db import Database
from app.webhooks import service as webhooks_service
from app.webhooks.dispatcher import Dispatcher, build_dispatcher
from app.webhooks.models import WebhookBatch
from app.webhooks.schemas import WebhookCreate
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.fakes.webhooks import ReceivedRequest, WebhookReceiver, running_receiver
from tests.support import Sender, run_worker
from tests.test_end_to_end import Deliver, send
from tests.webhooks.conftest import create_webhook, drain_until, hook_url, quick_settings


def verified(secret: str, request: ReceivedRequest) -> Any:
    """The body, after the official standardwebhooks library checked its signature."""
    return StandardWebhook(secret).verify(request.body, request.headers)


def delivered_ids(receiver: WebhookReceiver, secret: str) -> list[int]:
    """Ids of every event the receiver accepted, in arrival order."""
    return [item["id"] for r in receiver.accepted for item in verified(secret, r)["data"]]


async def test_events_arrive_signed_and_in_order(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver))
    assert hook["secret"].startswith("whsec_")
    await send(client, sender, to=["a@example.test", "b@example.test"], categories=["receipt"])
    await deliver()  # the worker's own dispatcher may already send the `processed` events
    await drain_until(dispatcher, lambda: len(delivered_ids(receiver, hook["secret"])) >= 4)

    events = []
    for request in receiver.requests:
        body = verified(hook["secret"], request)
        assert request.path == "/hooks"
        assert request.headers["webhook-id"].startswith("msg_")
        assert body["type"] == "message.events"
        events.extend(body["data"])
    assert sorted((e["email"], e["type"]) for e in events) == [
        ("a@example.test", "delivered"),
        ("a@example.test", "processed"),
        ("b@example.test", "delivered"),
        ("b@example.test", "processed"),
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(e["categories"] == ["receipt"] for e in events)


async def test_batches_hold_at_most_100_events_one_at_a_time(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    await send(client, sender, to=[f"user{i}@example.test" for i in range(250)])
    receiver.stall(0.2, times=3)  # slow answers: a second batch must wait for the first
    await drain_until(dispatcher, lambda: len(receiver.accepted) >= 3)

    sizes = [len(verified(hook["secret"], r)["data"]) for r in receiver.requests]
    assert sizes == [100, 100, 50]
    ids = delivered_ids(receiver, hook["secret"])
    assert ids == sorted(ids)
    assert len(set(ids)) == 250
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 3


async def test_failures_are_retried_with_the_same_webhook_id_until_recovery(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver))
    receiver.answer(500, times=2)
    receiver.hang(1.5)  # past the 1 s timeout
    receiver.answer(503)
    await send(client, sender, to=["retry@example.test"])
    await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)

    assert [r.answered for r in receiver.requests] == [500, 500, 200, 503, 200]
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    for request in receiver.requests:  # each retry is freshly signed and verifies
        verified(hook["secret"], request)
    response = await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=sender.headers)
    attempts = response.json()["deliveries"]
    assert [a["attempt"] for a in attempts] == [5, 4, 3, 2, 1]
    assert [a["response_status"] for a in attempts] == [200, 503, None, 500, 500]
    assert attempts[2]["error"] == "timed out"
    assert attempts[0]["succeeded"]
    assert attempts[0]["batch_state"] == "delivered"
    webhook = (await client.get(f"/v1/webhooks/{hook['id']}", headers=sender.headers)).json()
    assert webhook["consecutive_failures"] == 0
    assert webhook["enabled"]


async def test_410_gone_disables_the_endpoint_with_an_event(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    gone = await create_webhook(client, sender, hook_url(receiver, "/gone"))
    watcher = await create_webhook(client, sender, hook_url(receiver, "/watch"))
    receiver.answer(410, path="/gone")
    await send(client, sender, to=["x@example.test"])

    def watcher_saw_disable() -> bool:
        """Whether the second endpoint got the webhook_disabled event."""
        return any(
            e["type"] == "webhook_disabled"
            for r in receiver.accepted
            if r.path == "/watch"
            for e in r.json()["data"]
        )

    await drain_until(dispatcher, watcher_saw_disable)
    state = (await client.get(f"/v1/webhooks/{gone['id']}", headers=sender.headers)).json()
    assert state["enabled"] is False
    assert "410" in state["disabled_reason"]
    assert [r.path for r in receiver.requests].count("/gone") == 1
    feed = (await client.get("/v1/events?type=webhook_disabled", headers=sender.headers)).json()
    [event] = feed["events"]
    assert event["data"]["webhook_id"] == gone["id"]
    del watcher


async def test_a_run_of_failures_disables_the_endpoint(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    settings: Settings,
    db: Database,
) -> None:
    strict = build_dispatcher(quick_settings(settings, webhook_disable_after_failures=3), db)
    hook = await create_webhook(client, sender, hook_url(receiver))
    receiver.answer(500, times=10)
    await send(client, sender, to=["x@example.test"])

    async def disabled() -> bool:
        """Whether the endpoint is disabled now."""
        state = (await client.get(f"/v1/webhooks/{hook['id']}", headers=sender.headers)).json()
        return not state["enabled"]

    for _ in range(100):
        await strict.run()
        if await disabled():
            break
    await strict.client.close()
    assert len(receiver.requests) == 3
    state = (await client.get(f"/v1/webhooks/{hook['id']}", headers=sender.headers)).json()
    assert state["disabled_reason"].startswith("3 deliveries in a row failed")

    # Enabling it again resumes the same batch, with the same webhook-id.
    response = await client.patch(
        f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=sender.headers
    )
    assert response.status_code == 200
    assert response.json()["consecutive_failures"] == 0
    receiver._script.clear()
    quick = build_dispatcher(quick_settings(settings), db)
    await drain_until(quick, lambda: len(receiver.accepted) >= 1)
    await quick.client.close()
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient, sender: Sender, receiver: WebhookReceiver, dispatcher: Dispatcher
) -> None:
    async with running_receiver("127.0.0.8") as elsewhere:
        receiver.redirect(f"{elsewhere.base_url}/landing", status=307)
        hook = await create_webhook(client, sender, hook_url(receiver))
        await send(client, sender, to=["x@example.test"])
        await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
        assert elsewhere.requests == []
    attempts = (
        await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=sender.headers)
    ).json()["deliveries"]
    assert attempts[-1]["response_status"] == 307
    assert "not followed" in attempts[-1]["error"]


async def test_a_failing_batch_is_given_up_after_the_retry_period(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["processed"])
    receiver.answer(500, times=2)
    await send(client, sender, to=["first@example.test"])
    await dispatcher.run()
    travel(timedelta(days=3, minutes=1))  # the default WEBHOOK_RETRY_PERIOD is 3 days
    await dispatcher.run()  # fails again, now past the period: the batch is given up
    await send(client, sender, to=["second@example.test"])
    await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
    async with db.session() as session:
        states = list((await session.execute(select(WebhookBatch.state))).scalars())
    assert sorted(states) == ["delivered", "failed"]
    assert [e["email"] for e in receiver.accepted[0].json()["data"]] == ["second@example.test"]
    del hook


async def test_nothing_is_lost_across_a_worker_restart(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    dns_server: FakeDNS,
    settings: Settings,
    redis_url: str,
) -> None:
    dns_server.add_a("hooks.test", "127.0.0.7")
    async with running_receiver("127.0.0.7") as first:
        port = first.port
    # The endpoint is down (nothing listens) while the first workers run.
    hook = await create_webhook(client, sender, f"http://hooks.test:{port}/hooks")
    await send(client, sender, to=["a@example.test", "b@example.test"])
    quick = quick_settings(settings)
    await run_worker(quick, redis_url)  # delivers the mail; webhooks fail: connection refused
    await asyncio.sleep(0.3)  # past the (quick) backoff
    await run_worker(quick, redis_url)  # a restarted worker: the endpoint is still down
    async with running_receiver("127.0.0.7", port=port) as live:
        await asyncio.sleep(0.3)
        for _ in range(20):  # fresh workers: the outbox and the batch are in the database
            await run_worker(quick, redis_url)
            if len(delivered_ids(live, hook["secret"])) >= 4:
                break
            await asyncio.sleep(0.1)
        ids = delivered_ids(live, hook["secret"])
    assert len(ids) == 4
    assert len(set(ids)) == 4


async def stored_webhook(db: Database, sender: Sender, url: str, *, secret_key: bytes) -> str:
    """An endpoint written straight to the database, as one stored before URLs were checked."""
    async with db.session() as session:
        webhook, _ = await webhooks_service.create(
            session,
            account_id=sender.account_id,
            request=WebhookCreate(url=url),
            secret_key=secret_key,
        )
        await session.commit()
    return webhook.id


async def test_a_url_that_cannot_be_sent_to_fails_like_any_attempt(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    settings: Settings,
    db: Database,
) -> None:
    """Issue 10, item 6: a stored URL with a control character, or a host DNS cannot look up,
    is a recorded failed attempt with backoff and in the end a disabled endpoint; the
    dispatcher never raises, and the account's other endpoints keep receiving."""
    key = settings.secret_key_bytes()
    broken = [
        await stored_webhook(db, sender, hook_url(receiver, "/hooks\u0001"), secret_key=key),
        await stored_webhook(db, sender, hook_url(receiver, "/a?token=\u2028"), secret_key=key),
        await stored_webhook(db, sender, f"http://a..b.test:{receiver.port}/", secret_key=key),
        await stored_webhook(db, sender, f"http://{'x' * 64}.test:1/", secret_key=key),
    ]
    good = await create_webhook(client, sender, hook_url(receiver, "/good"))
    strict = build_dispatcher(quick_settings(settings, webhook_disable_after_failures=3), db)
    await send(client, sender, to=["x@example.test"])
    for _ in range(100):
        await strict.run()  # raises nothing
        states = [
            (await client.get(f"/v1/webhooks/{hook_id}", headers=sender.headers)).json()
            for hook_id in broken
        ]
        if not any(state["enabled"] for state in states):
            break
        await asyncio.sleep(0.05)
    await strict.client.close()
    for hook_id, state in zip(broken, states, strict=True):
        assert state["disabled_reason"].startswith("3 deliveries in a row failed"), state
        attempts = (
            await client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=sender.headers)
        ).json()["deliveries"]
        assert [a["attempt"] for a in attempts] == [3, 2, 1]
        assert all(a["error"].startswith("refused:") for a in attempts), attempts
        assert attempts[1]["attempted_at"] > attempts[2]["attempted_at"]
    assert {r.path for r in receiver.accepted} == {"/good"}
    assert good["enabled"]


async def test_a_batch_that_cannot_be_built_fails_like_any_attempt(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    settings: Settings,
    db: Database,
) -> None:
    """Issue 10, item 6: an error while building the request (here a secret sealed under
    another COLUMBA_SECRET_KEY) is a recorded failure with backoff and in the end a disabled
    endpoint, not an exception out of the dispatcher."""
    hook_id = await stored_webhook(db, sender, hook_url(receiver), secret_key=b"another" * 8)
    await send(client, sender, to=["x@example.test"])
    strict = build_dispatcher(quick_settings(settings, webhook_disable_after_failures=2), db)
    for _ in range(100):
        await strict.run()  # raises nothing
        state = (await client.get(f"/v1/webhooks/{hook_id}", headers=sender.headers)).json()
        if not state["enabled"]:
            break
        await asyncio.sleep(0.05)
    await strict.client.close()
    attempts = (
        await client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=sender.headers)
    ).json()["deliveries"]
    assert [a["error"] for a in attempts] == ["request not built: InvalidToken"] * 2
    assert state["disabled_reason"].startswith("2 deliveries in a row failed")
    assert receiver.requests == []


async def test_endpoints_of_one_account_disabled_at_once(
    client: httpx.AsyncClient, sender: Sender, receiver: WebhookReceiver, dispatcher: Dispatcher
) -> None:
    """Each disable writes a `webhook_disabled` event to the account's other endpoints; four
    endpoints answering 410 together are disabled in concurrent transactions without a
    deadlock on PostgreSQL (the endpoint row is locked FOR NO KEY UPDATE)."""
    paths = [f"/gone{i}" for i in range(4)]
    hooks = [await create_webhook(client, sender, hook_url(receiver, path)) for path in paths]
    for path in paths:
        receiver.answer(410, path=path)
    await send(client, sender, to=["x@example.test"])
    await dispatcher.run()  # raises nothing
    for hook in hooks:
        state = (await client.get(f"/v1/webhooks/{hook['id']}", headers=sender.headers)).json()
        assert not state["enabled"]
        assert "410" in state["disabled_reason"]
    feed = (await client.get("/v1/events?type=webhook_disabled", headers=sender.headers)).json()
    assert len(feed["events"]) == 4
