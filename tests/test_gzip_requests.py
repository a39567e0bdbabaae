"""Request bodies sent with `Content-Encoding: gzip`, as SendGrid documents for mail send:
inflated and served as the same JSON would be; their inflated size is held to the limit. And
`on-behalf-of` (SendGrid's subusers), refused rather than ignored."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from app.core.config import Settings
from app.core.db import Database
from tests.messages.test_send_validation import count_rows
from tests.support import ApiServer, Sender


def mail(sender: Sender, text: str = "Hello") -> dict[str, Any]:
    """A v3 mail send body."""
    return {
        "personalizations": [{"to": [{"email": "alice@example.test"}]}],
        "from": {"email": sender.address()},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": text}],
    }


def gzip_headers(sender: Sender, encoding: str = "gzip") -> dict[str, str]:
    """The sender's headers plus a JSON content type and the encoding."""
    return sender.headers | {"Content-Type": "application/json", "Content-Encoding": encoding}


@pytest_asyncio.fixture
async def small_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An API whose message size limit is 64 KB."""
    limited = settings.model_copy(update={"max_message_size": 64 * 1024})
    async with (
        ApiServer.running(limited) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        yield http


async def test_a_gzip_body_is_accepted(client: httpx.AsyncClient, sender: Sender) -> None:
    compressed = gzip.compress(json.dumps(mail(sender)).encode())
    response = await client.post("/v3/mail/send", content=compressed, headers=gzip_headers(sender))
    assert response.status_code == 202, response.text
    message_id = response.headers["X-Message-Id"]
    view = await client.get(f"/v1/messages/{message_id}", headers=sender.headers)
    assert view.json()["subject"] == "Hi"


async def test_gzip_works_on_every_route(client: httpx.AsyncClient, sender: Sender) -> None:
    body = {"email": "gz@example.test", "type": "manual"}
    compressed = gzip.compress(json.dumps({"suppressions": [body]}).encode())
    response = await client.post(
        "/v1/suppressions", content=compressed, headers=gzip_headers(sender)
    )
    assert response.status_code in (200, 201), response.text


async def test_a_body_that_is_not_gzip_is_400(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    plain = json.dumps(mail(sender)).encode()
    response = await client.post("/v3/mail/send", content=plain, headers=gzip_headers(sender))
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "the body is not valid gzip"
    truncated = gzip.compress(plain)[:-12]
    response = await client.post("/v3/mail/send", content=truncated, headers=gzip_headers(sender))
    assert response.status_code == 400
    assert await count_rows(db) == (0, 0, 0)


async def test_an_encoding_other_than_gzip_is_415(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    response = await client.post(
        "/v3/mail/send", content=b"...", headers=gzip_headers(sender, "br")
    )
    assert response.status_code == 415
    assert "not supported" in response.json()["errors"][0]["message"]


async def test_a_small_gzip_that_inflates_past_the_limit_is_413(
    small_api: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    bomb = gzip.compress(json.dumps(mail(sender, "z" * 50 * 1024 * 1024)).encode())
    assert len(bomb) < 100 * 1024  # well under the limit as sent
    response = await small_api.post("/v3/mail/send", content=bomb, headers=gzip_headers(sender))
    assert response.status_code == 413
    assert await count_rows(db) == (0, 0, 0)


async def test_on_behalf_of_is_refused_not_ignored(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    headers = sender.headers | {"on-behalf-of": "subuser1"}
    response = await client.post("/v3/mail/send", json=mail(sender), headers=headers)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "on-behalf-of"
    assert "no subusers" in error["message"]
    assert await count_rows(db) == (0, 0, 0)
    stats = await client.get("/v3/stats?start_date=2026-01-01", headers=headers)
    assert stats.status_code == 400
