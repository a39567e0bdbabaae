"""/v3/tracking_settings through the official `sendgrid` client, as SendGrid users call it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from python_http_client.exceptions import BadRequestsError, ForbiddenError, HTTPError
from sendgrid import SendGridAPIClient

from app.core.db import Database
from app.tracking.settings import effective_settings
from tests.support import ApiServer, Sender, make_key


@pytest.fixture
def sg(api: ApiServer, sender: Sender) -> SendGridAPIClient:
    """The official client, pointed at the live API."""
    return SendGridAPIClient(sender.key, host=api.url)


async def call(request: Callable[..., Any], **kwargs: Any) -> Any:
    """Run one of the client's (synchronous) calls in a thread; the JSON it got back."""
    response = await asyncio.to_thread(request, **kwargs)
    assert response.status_code == 200
    return json.loads(response.body)


async def test_an_untouched_account_has_everything_off(sg: SendGridAPIClient) -> None:
    listed = await call(sg.client.tracking_settings.get)
    assert sorted(item["name"] for item in listed["result"]) == [
        "click",
        "google_analytics",
        "open",
        "subscription",
    ]
    assert not any(item["enabled"] for item in listed["result"])
    assert all(item["title"] and item["description"] for item in listed["result"])
    assert await call(sg.client.tracking_settings.click.get) == {
        "enabled": False,
        "enable_text": False,
    }
    assert await call(sg.client.tracking_settings.open.get) == {"enabled": False}
    assert await call(sg.client.tracking_settings.google_analytics.get) == {
        "enabled": False,
        "utm_campaign": "",
        "utm_content": "",
        "utm_medium": "",
        "utm_source": "",
        "utm_term": "",
    }
    subscription = await call(sg.client.tracking_settings.subscription.get)
    assert subscription["enabled"] is False
    assert subscription["list_unsubscribe"] is False


async def test_patches_are_kept_and_drive_the_send_path(
    sg: SendGridAPIClient, sender: Sender, db: Database
) -> None:
    settings = sg.client.tracking_settings
    assert await call(settings.open.patch, request_body={"enabled": True}) == {"enabled": True}
    assert await call(settings.click.patch, request_body={"enabled": True}) == {
        "enabled": True,
        "enable_text": False,
    }
    ga = {"enabled": True, "utm_source": "columba", "utm_medium": "email"}
    assert (await call(settings.google_analytics.patch, request_body=ga))["utm_source"] == "columba"
    subscription = {
        "enabled": True,
        "html_content": "<p>Unsubscribe: <% %></p>",
        "plain_content": "Unsubscribe: <% %>",
        "landing": "<p>Bye</p>",
        "replace": "[unsubscribe]",
        "url": "https://example.com/unsubscribe",
        "list_unsubscribe": True,
    }
    stored = await call(settings.subscription.patch, request_body=subscription)
    assert stored == subscription
    # A partial PATCH changes only what it names.
    await call(settings.google_analytics.patch, request_body={"utm_term": "sale"})
    listed = await call(settings.get)
    assert all(item["enabled"] for item in listed["result"])
    async with db.session() as session:
        view = await effective_settings(session, sender.account_id)
    assert view.open_enabled
    assert view.click_enabled
    assert view.list_unsubscribe
    assert (view.utm_source, view.utm_medium, view.utm_term) == ("columba", "email", "sale")
    assert view.subscription_landing == "<p>Bye</p>"


async def test_wrong_types_are_sendgrid_errors(sg: SendGridAPIClient) -> None:
    settings = sg.client.tracking_settings
    for request, body in (
        (settings.open.patch, {"enabled": "yes please"}),
        (settings.open.patch, {"enabled": 1}),
        (settings.click.patch, {"enabled": None}),
        (settings.subscription.patch, {"url": "not a url"}),
        (settings.google_analytics.patch, {"utm_source": "x" * 256}),
    ):
        with pytest.raises(BadRequestsError) as raised:
            await asyncio.to_thread(request, request_body=body)
        errors = json.loads(raised.value.body)["errors"]
        assert errors[0]["message"]
        assert errors[0]["field"]


async def test_scopes_are_sendgrids(api: ApiServer, db: Database) -> None:
    reader = await make_key(
        db, account="acme", scopes=["tracking_settings.read", "tracking_settings.open.read"]
    )
    sg = SendGridAPIClient(reader, host=api.url)
    assert (await call(sg.client.tracking_settings.get))["result"]
    assert await call(sg.client.tracking_settings.open.get) == {"enabled": False}
    with pytest.raises(ForbiddenError):
        await asyncio.to_thread(
            sg.client.tracking_settings.open.patch, request_body={"enabled": True}
        )
    with pytest.raises(ForbiddenError):
        await asyncio.to_thread(sg.client.tracking_settings.click.get)


async def test_a_key_without_credentials_is_refused(api: ApiServer) -> None:
    stranger = SendGridAPIClient("SG.nope.nope", host=api.url)
    with pytest.raises(HTTPError) as raised:
        await asyncio.to_thread(stranger.client.tracking_settings.get)
    assert raised.value.status_code == 401
