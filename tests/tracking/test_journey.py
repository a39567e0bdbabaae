"""A promotion mail's whole journey, driven only by what the received mail carries: the
official client sends with an unsubscribe group and click tracking; the copy's signed
List-Unsubscribe takes the RFC 8058 one-click POST; the next send is dropped; a tampered
click link is 404 and the real one redirects; webhooks report it all; resubscribing through
the ASM API restores delivery."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Asm, ClickTracking, Content, GroupId, Mail, TrackingSettings

from app.webhooks.dispatcher import Dispatcher
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.fakes.webhooks import WebhookReceiver
from tests.support import ApiServer, Sender, verify_dkim_with_perl
from tests.test_end_to_end import Deliver, message_view
from tests.tracking.support import Html, body, by_recipient, signed_names
from tests.tracking.test_rendering import LIST_UNSUBSCRIBE
from tests.webhooks.conftest import create_webhook, drain_until, hook_url

SALE = "https://shop.example/sale?id=7"
ALICE = "alice@example.test"


def promotion(sender: Sender, group_id: int) -> Mail:
    """The mail a promotion job sends, as SendGrid's Python helpers build it."""
    mail = Mail(sender.address(), ALICE, "Spring sale")
    mail.add_content(Content("text/plain", "Our sale: " + SALE))
    mail.add_content(Content("text/html", f'<p>Our <a href="{SALE}">sale</a>.</p>'))
    mail.asm = Asm(GroupId(group_id))
    mail.tracking_settings = TrackingSettings(click_tracking=ClickTracking(True, False))
    return mail


async def official_send(api: ApiServer, sender: Sender, mail: Mail) -> str:
    """Send with the official client (synchronous: in a thread); returns X-Message-Id."""
    client = SendGridAPIClient(sender.key, host=api.url)
    response: Any = await asyncio.to_thread(client.send, mail)
    assert response.status_code == 202
    return str(response.headers["X-Message-Id"])


def path_of(url: str) -> str:
    """A link's path, to request from the API under test (PUBLIC_URL is not its address)."""
    return urlsplit(url).path


async def test_a_promotion_from_send_to_unsubscribe_and_back(
    api: ApiServer,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    dns_server: FakeDNS,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    await create_webhook(client, sender, hook_url(receiver), format="sendgrid")
    created = await client.post(
        "/v3/asm/groups",
        json={"name": "Promotions", "description": "Sales and offers"},
        headers=sender.headers,
    )
    group_id = created.json()["id"]
    await official_send(api, sender, promotion(sender, group_id))
    await deliver()
    [received] = await mx.wait_for(1)
    copy = by_recipient([received])[ALICE]

    # The copy carries a one-click List-Unsubscribe, signed (checked by Mail::DKIM).
    [header] = copy.get_all("List-Unsubscribe") or []
    match = LIST_UNSUBSCRIBE.match(" ".join(str(header).split()))
    assert match is not None, header
    assert copy["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_names(copy))
    assert await verify_dkim_with_perl(received.data, dns_server) == ["rsa-sha256 pass"]

    # Its link is rewritten: the real token redirects, an altered one is 404.
    [tracked] = Html(body(copy, "html")).hrefs
    click = path_of(tracked)
    redirect = await client.get(click, headers={"User-Agent": "Mozilla/5.0 (Macintosh)"})
    assert (redirect.status_code, redirect.headers["location"]) == (302, SALE)
    altered = click[:-3] + ("A" if click[-3] != "A" else "B") + click[-2:]
    assert (await client.get(altered)).status_code == 404

    # RFC 8058 §3.2: a POST with exactly this body, no cookie, no credentials.
    one_click = await client.post(
        path_of(match["url"]),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200

    # The next promotion to Alice is dropped at once, with SendGrid's reason.
    dropped_id = await official_send(api, sender, promotion(sender, group_id))
    [dropped] = (await message_view(client, sender, dropped_id))["recipients"]
    assert dropped["status"] == "dropped"

    await drain_until(dispatcher, lambda: {"group_unsubscribe", "dropped"} <= names(receiver))
    events = {item["event"]: item for item in sendgrid_events(receiver)}
    assert events["click"]["url"] == SALE
    assert events["group_unsubscribe"]["asm_group_id"] == group_id
    assert events["dropped"]["reason"] == "Unsubscribed Address"

    # Taken off the group's list through the ASM API, Alice gets the next one again.
    back = await client.delete(
        f"/v3/asm/groups/{group_id}/suppressions/{ALICE}", headers=sender.headers
    )
    assert back.status_code == 204
    again_id = await official_send(api, sender, promotion(sender, group_id))
    await deliver()
    await mx.wait_for(2)
    [again] = (await message_view(client, sender, again_id))["recipients"]
    assert again["status"] == "delivered"


def sendgrid_events(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Every event the SendGrid-format endpoint received."""
    return [item for request in receiver.requests for item in request.json()]


def names(receiver: WebhookReceiver) -> set[str]:
    """The SendGrid event names received so far."""
    return {item["event"] for item in sendgrid_events(receiver)}
