"""Opens, clicks and (un)subscribes reach webhooks in Columba's format and SendGrid's, and the
event feed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

from app.core.db import Database
from app.tracking.tokens import Kind
from app.webhooks.dispatcher import Dispatcher
from tests.fakes.webhooks import WebhookReceiver
from tests.support import Sender
from tests.tracking.conftest import Delivered, Tokens, make_group
from tests.webhooks.conftest import create_webhook, drain_until, hook_url

DeliverTo = Callable[..., Awaitable[list[Delivered]]]
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5"
TYPES = ["opened", "clicked", "unsubscribed", "group_unsubscribed", "group_resubscribed"]
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


def native_events(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Every event the Columba-format endpoint got."""
    return [e for r in receiver.requests if r.path == "/native" for e in r.json()["data"]]


def sendgrid_events(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Every event the SendGrid-format endpoint got."""
    return [e for r in receiver.requests if r.path == "/sg" for e in r.json()]


async def test_tracking_events_reach_both_webhook_formats(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    token_path: Tokens,
    db: Database,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
    travel: Callable[[timedelta], None],
) -> None:
    await create_webhook(client, sender, hook_url(receiver, "/native"), event_types=TYPES)
    await create_webhook(
        client, sender, hook_url(receiver, "/sg"), event_types=TYPES, format="sendgrid"
    )
    deals = await make_group(db, sender, "Deals")
    [alice] = await deliver_to("alice@example.test")
    travel(timedelta(minutes=2))
    url = "https://shop.example/deal"
    await client.get(token_path(alice, Kind.OPEN), headers={"User-Agent": "Mozilla/5.0"})
    await client.get(token_path(alice, Kind.OPEN), headers={"User-Agent": BROWSER})
    await client.get(token_path(alice, Kind.CLICK, url=url), headers={"User-Agent": BROWSER})
    group_link = token_path(alice, Kind.UNSUBSCRIBE, group_id=deals)
    await client.post(group_link, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    await client.post(group_link, data={"action": "resubscribe"})
    await client.post(token_path(alice, Kind.UNSUBSCRIBE), data={"action": "unsubscribe"})
    await drain_until(
        dispatcher,
        lambda: len(native_events(receiver)) >= 6 and len(sendgrid_events(receiver)) >= 6,
    )

    native = native_events(receiver)
    assert [e["type"] for e in native] == [
        "opened",
        "opened",
        "clicked",
        "group_unsubscribed",
        "group_resubscribed",
        "unsubscribed",
    ]
    assert all(e["email"] == "alice@example.test" for e in native)
    assert native[0]["data"]["machine"] is True
    assert native[1]["data"]["useragent"] == BROWSER
    assert native[2]["data"]["url"] == url
    assert native[3]["data"]["asm_group_id"] == deals

    sg = sendgrid_events(receiver)
    assert [e["event"] for e in sg] == [
        "open",
        "open",
        "click",
        "group_unsubscribe",
        "group_resubscribe",
        "unsubscribe",
    ]
    machine_open, person_open, click, left, back, unsubscribe = sg
    assert machine_open["sg_machine_open"] is True
    assert person_open["sg_machine_open"] is False
    assert person_open["useragent"] == BROWSER
    assert person_open["ip"] == "127.0.0.1"
    assert click["url"] == url
    assert click["useragent"] == BROWSER
    assert (left["asm_group_id"], back["asm_group_id"]) == (deals, deals)
    assert "asm_group_id" not in unsubscribe
    assert all(e["email"] == "alice@example.test" for e in sg)
    assert all(e["sg_message_id"] == f"{alice.message_id}.{alice.recipient_id}" for e in sg)
