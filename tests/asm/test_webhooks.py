"""A recipient dropped for a group opt-out, as a SendGrid-format webhook reports it."""

from __future__ import annotations

import httpx
from standardwebhooks.webhooks import Webhook as StandardWebhook

from app.webhooks.dispatcher import Dispatcher
from tests.asm.test_api import create
from tests.asm.test_sends import opt_out
from tests.fakes.mx import ScriptedMX
from tests.fakes.webhooks import WebhookReceiver
from tests.support import Sender
from tests.test_end_to_end import Deliver, send
from tests.webhooks.conftest import create_webhook, drain_until, hook_url


async def test_the_dropped_event_names_the_group(
    client: httpx.AsyncClient, sender: Sender, receiver: WebhookReceiver, dispatcher: Dispatcher
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), format="sendgrid")
    news = await create(client, sender, "News")
    await opt_out(client, sender, news["id"], "left@example.test")
    await send(
        client, sender, to=["left@example.test", "ok@example.test"], unsubscribe_group=news["id"]
    )
    await drain_until(dispatcher, lambda: sum(len(r.json()) for r in receiver.accepted) >= 2)
    items = [
        item
        for r in receiver.requests
        for item in StandardWebhook(hook["secret"]).verify(r.body, r.headers)
    ]
    by_email = {item["email"]: item for item in items}
    dropped = by_email["left@example.test"]
    assert (dropped["event"], dropped["reason"], dropped["asm_group_id"]) == (
        "dropped",
        "Unsubscribed Address",
        news["id"],
    )
    processed = by_email["ok@example.test"]
    assert (processed["event"], processed["asm_group_id"]) == ("processed", news["id"])


async def test_delivery_events_name_the_group_too(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
    mx: ScriptedMX,
    deliver: Deliver,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), format="sendgrid")
    news = await create(client, sender, "News")
    await send(client, sender, to=["ok@example.test"], unsubscribe_group=news["id"])
    await deliver()
    await mx.wait_for(1)
    await drain_until(dispatcher, lambda: sum(len(r.json()) for r in receiver.accepted) >= 2)
    items = [
        item
        for r in receiver.requests
        for item in StandardWebhook(hook["secret"]).verify(r.body, r.headers)
    ]
    assert {(item["event"], item["asm_group_id"]) for item in items} == {
        ("processed", news["id"]),
        ("delivered", news["id"]),
    }
