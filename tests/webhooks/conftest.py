"""Fixtures for webhook tests: a live receiver, a dispatcher with quick retries, helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio

from app.core.config import Settings
from app.core.db import Database
from app.webhooks.dispatcher import Dispatcher, build_dispatcher
from tests.fakes.dns import FakeDNS
from tests.fakes.webhooks import WebhookReceiver, running_receiver
from tests.support import Sender

HOOK_HOST = "hooks.test"


@pytest_asyncio.fixture
async def receiver(dns_server: FakeDNS) -> AsyncIterator[WebhookReceiver]:
    """A webhook endpoint at http://hooks.test:<port> (127.0.0.7)."""
    dns_server.add_a(HOOK_HOST, "127.0.0.7")
    async with running_receiver("127.0.0.7") as live:
        yield live


def hook_url(receiver: WebhookReceiver, path: str = "/hooks") -> str:
    """The receiver's URL by host name, as a customer would give it."""
    return f"http://{HOOK_HOST}:{receiver.port}{path}"


def quick_settings(settings: Settings, **changes: Any) -> Settings:
    """Settings with retries in milliseconds, so tests see several attempts quickly."""
    values: dict[str, Any] = {
        "webhook_retry_min": timedelta(milliseconds=20),
        "webhook_retry_max_interval": timedelta(milliseconds=200),
        "webhook_timeout": timedelta(seconds=1),
        **changes,
    }
    return settings.model_copy(update=values)


@pytest_asyncio.fixture
async def dispatcher(settings: Settings, db: Database) -> AsyncIterator[Dispatcher]:
    """A dispatcher with quick retries."""
    built = build_dispatcher(quick_settings(settings), db)
    yield built
    await built.client.close()


async def create_webhook(
    client: httpx.AsyncClient, sender: Sender, url: str, **fields: Any
) -> dict[str, Any]:
    """POST /v1/webhooks; returns the 201 body (with the secret)."""
    response = await client.post(
        "/v1/webhooks", json={"url": url, **fields}, headers=sender.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def drain_until(
    dispatcher: Dispatcher, done: Callable[[], bool], *, rounds: int = 200
) -> None:
    """Run the dispatcher until `done()` (retries are milliseconds apart)."""
    for _ in range(rounds):
        await dispatcher.run()
        if done():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the dispatcher did not get there")
