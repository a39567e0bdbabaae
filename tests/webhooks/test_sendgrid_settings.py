"""SendGrid's event webhook settings with the official `sendgrid` client, and SendGrid's signature
on what is delivered, checked with the client's own `EventWebhook` helper, unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import BadRequestsError, NotFoundError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sendgrid.helpers.mail import Asm, CustomArg, GroupId, Mail, Personalization, To

from app.webhooks.dispatcher import Dispatcher
from tests.fakes.mx import ScriptedMX
from tests.fakes.webhooks import ReceivedRequest, WebhookReceiver
from tests.sendgrid.test_client import parse
from tests.support import ApiServer, Sender
from tests.test_end_to_end import Deliver
from tests.webhooks.conftest import drain_until, hook_url

SETTINGS = {
    "enabled": True,
    "processed": True,
    "delivered": True,
    "bounce": True,
    "friendly_name": "Delivery Webhook",
}


async def call(request: Callable[..., Any], **kwargs: Any) -> Any:
    """One synchronous client call in a thread; the JSON body (None when empty)."""
    response = await asyncio.to_thread(request, **kwargs)
    return json.loads(response.body) if response.body else None


def verified(request: ReceivedRequest, public_key: str) -> bool:
    """What a receiver following SendGrid's documentation checks."""
    signature = request.headers[EventWebhookHeader.SIGNATURE.lower()]
    timestamp = request.headers[EventWebhookHeader.TIMESTAMP.lower()]
    result: bool = EventWebhook(public_key).verify_signature(
        request.body.decode(), signature, timestamp
    )
    return result


def settings_api(api: ApiServer, sender: Sender) -> Any:
    """`/v3/user/webhooks/event` through the official client."""
    return SendGridAPIClient(sender.key, host=api.url).client.user.webhooks.event


async def test_settings_create_read_update_and_delete(
    api: ApiServer, sender: Sender, receiver: WebhookReceiver
) -> None:
    event = settings_api(api, sender)
    url = hook_url(receiver)
    created = await call(event.settings.post, request_body={"url": url, **SETTINGS})
    assert created["url"] == url
    assert created["friendly_name"] == "Delivery Webhook"
    assert (created["processed"], created["delivered"], created["bounce"]) == (True,) * 3
    assert (created["open"], created["click"], created["dropped"]) == (False,) * 3
    assert "public_key" not in created or created["public_key"] is None
    webhook_id = created["id"]

    assert (await call(event.settings._(webhook_id).get))["id"] == webhook_id
    assert (await call(event.settings.get))["id"] == webhook_id  # the oldest, without an id
    changed = await call(
        event.settings._(webhook_id).patch, request_body={"url": url, "dropped": True}
    )
    assert changed["dropped"] is True
    assert changed["delivered"] is True  # left out: unchanged
    listed = await call(event.settings.all.get)
    assert listed["max_allowed"] >= 1
    assert [w["id"] for w in listed["webhooks"]] == [webhook_id]

    with pytest.raises(BadRequestsError) as twice:
        await call(event.settings.post, request_body={"url": url})
    assert "already exists" in json.loads(twice.value.body)["errors"][0]["message"]
    with pytest.raises(BadRequestsError):
        await call(
            event.settings.post,
            request_body={"url": url + "2", "oauth_client_id": "a", "oauth_token_url": url},
        )

    assert await call(event.settings._(webhook_id).delete) is None
    with pytest.raises(NotFoundError):
        await call(event.settings._(webhook_id).get)
    with pytest.raises(NotFoundError):
        await call(event.settings.signed.get)


async def test_the_single_webhook_form_creates_on_first_patch(
    api: ApiServer, sender: Sender, receiver: WebhookReceiver
) -> None:
    event = settings_api(api, sender)
    unset = await call(event.settings.get)
    assert (unset["enabled"], unset["url"], unset["delivered"]) == (False, "", False)
    created = await call(event.settings.patch, request_body={"url": hook_url(receiver), **SETTINGS})
    assert (await call(event.settings.get))["id"] == created["id"]
    again = await call(event.settings.patch, request_body={"url": hook_url(receiver), "open": True})
    assert again["id"] == created["id"]
    assert again["open"] is True


async def test_signed_deliveries_verify_with_sendgrids_helper(
    api: ApiServer,
    sender: Sender,
    receiver: WebhookReceiver,
    mx: ScriptedMX,
    deliver: Deliver,
    dispatcher: Dispatcher,
) -> None:
    event = settings_api(api, sender)
    created = await call(event.settings.post, request_body={"url": hook_url(receiver), **SETTINGS})
    signed = await call(
        event.settings.signed._(created["id"]).patch, request_body={"enabled": True}
    )
    public_key = signed["public_key"]
    assert signed["id"] == created["id"]
    assert public_key
    assert (await call(event.settings.signed.get))["public_key"] == public_key
    assert (await call(event.settings._(created["id"]).get))["public_key"] == public_key

    mail = Mail(
        from_email=sender.address(), subject="Order", plain_text_content="Thanks for your order."
    )
    for address, order in (("ann@example.test", "1"), ("ben@example.test", "2")):
        personalization = Personalization()
        personalization.add_to(To(address))
        personalization.add_custom_arg(CustomArg("order", order))
        mail.add_personalization(personalization)
    mail.custom_arg = [CustomArg("shop", "north"), CustomArg("order", "message-level")]
    sg = SendGridAPIClient(sender.key, host=api.url)
    group = await call(
        sg.client.asm.groups.post, request_body={"name": "Orders", "description": "d"}
    )
    mail.asm = Asm(GroupId(group["id"]))
    client = SendGridAPIClient(sender.key, host=api.url)
    assert (await asyncio.to_thread(client.send, mail)).status_code == 202
    await deliver()
    await mx.wait_for(2)
    await drain_until(dispatcher, lambda: sum(len(r.json()) for r in receiver.accepted) >= 4)

    items: list[dict[str, Any]] = []
    for request in receiver.requests:
        assert verified(request, public_key)
        tampered = ReceivedRequest(request.path, request.headers, request.body + b" ", 200)
        assert not verified(tampered, public_key)
        items.extend(request.json())
    assert {(i["event"], i["email"]) for i in items} == {
        (event, email)
        for event in ("processed", "delivered")
        for email in ("ann@example.test", "ben@example.test")
    }
    # Each copy's own Message-ID and its personalization's custom_args over the message's.
    message_ids = {rcpt: parse(m.data)["Message-ID"] for m in mx.messages for rcpt in m.rcpt_tos}
    assert len(set(message_ids.values())) == 2
    for item in items:
        assert item["smtp-id"] == message_ids[item["email"]]
        assert item["shop"] == "north"
        assert item["order"] == {"ann@example.test": "1", "ben@example.test": "2"}[item["email"]]
        assert item["asm_group_id"] == group["id"]

    off = await call(event.settings.signed._(created["id"]).patch, request_body={"enabled": False})
    assert off == {"id": created["id"], "public_key": ""}


async def test_the_test_event_is_signed_as_the_webhook_signs(
    api: ApiServer, sender: Sender, receiver: WebhookReceiver
) -> None:
    event = settings_api(api, sender)
    url = hook_url(receiver)
    created = await call(event.settings.post, request_body={"url": url, **SETTINGS})
    signed = await call(
        event.settings.signed._(created["id"]).patch, request_body={"enabled": True}
    )
    assert await call(event.test.post, request_body={"id": created["id"], "url": url}) is None
    [request] = await receiver.wait_for(1)
    assert verified(request, signed["public_key"])
    names = {item["event"] for item in request.json()}
    assert {"processed", "delivered", "bounce", "open", "click"} <= names
    assert all(item["email"] == "example@test.com" for item in request.json())

    receiver.answer(500)
    with pytest.raises(BadRequestsError):
        await call(event.test.post, request_body={"url": url})


async def test_concurrent_creates_for_one_url_make_one_endpoint(
    client: httpx.AsyncClient, sender: Sender, receiver: WebhookReceiver
) -> None:
    """The URL check and the insert run under the account's lock: of eight requests for one
    URL at once, one creates the endpoint and seven get SendGrid's 400 (two endpoints would
    deliver every event twice)."""
    url = hook_url(receiver, "/race")
    body = {"url": url, **SETTINGS}
    path = "/v3/user/webhooks/event/settings"
    answers = await asyncio.gather(
        *(client.post(path, json=body, headers=sender.headers) for _ in range(8))
    )
    assert sorted(a.status_code for a in answers) == [201] + [400] * 7
    listed = await client.get("/v3/user/webhooks/event/settings/all", headers=sender.headers)
    assert [w["url"] for w in listed.json()["webhooks"]].count(url) == 1
