"""Bad sends get a 4xx in SendGrid's error shape, and nothing is written."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import Database
from app.events.models import Event
from app.messages.models import Message, Recipient
from tests.support import ApiServer, Sender


def body(sender: Sender, **overrides: Any) -> dict[str, Any]:
    """A valid body with some fields replaced."""
    valid = {"from": sender.address(), "to": ["x@example.test"], "subject": "Hi", "text": "Hello"}
    return {**valid, **overrides}


async def count_rows(db: Database) -> tuple[int, int, int]:
    """Messages, recipients, events in the database."""
    async with db.session() as session:
        return (
            await session.scalar(select(func.count()).select_from(Message)) or 0,
            await session.scalar(select(func.count()).select_from(Recipient)) or 0,
            await session.scalar(select(func.count()).select_from(Event)) or 0,
        )


async def post(client: httpx.AsyncClient, sender: Sender, payload: Any) -> httpx.Response:
    """POST /v1/send as the sender."""
    return await client.post("/v1/send", json=payload, headers=sender.headers)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Hello\r\nBcc: victim@example.test"}, "subject"),
        ({"subject": "null\x00byte"}, "subject"),
        ({"from": {"email": "noreply@sender.test", "name": "Evil\nBcc: x@y.test"}}, "from.name"),
        ({"headers": {"X-Campaign": "a\r\nBcc: x@y.test"}}, "headers.X-Campaign"),
        ({"headers": {"Bad Name": "v"}}, "headers"),
        ({"headers": {"Message-ID": "<mine@x>"}}, "headers"),
        ({"to": ["not-an-address"]}, "to.0.email"),
        ({"to": ["a@example.test\r\nBcc: b@example.test"]}, "to.0.email"),
        ({"to": []}, "to"),
        ({"cc": [{"email": "x@example.test"}]}, None),
        ({"text": None, "html": None}, None),
        ({"categories": ["c"] * 11}, "categories"),
        ({"attachments": [{"content": "%%%", "filename": "a.txt"}]}, "attachments.0.content"),
        (
            {"attachments": [{"content": "aGk=", "filename": "a\r\n.txt"}]},
            "attachments.0.filename",
        ),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
async def test_invalid_input_is_400_and_writes_nothing(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    overrides: dict[str, Any],
    field: str | None,
) -> None:
    response = await post(client, sender, body(sender, **overrides))
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert errors
    assert all(set(e) == {"message", "field", "help"} for e in errors)
    if field is not None:
        assert field in {e["field"] for e in errors}, errors
    assert await count_rows(db) == (0, 0, 0)


async def test_malformed_json_is_400(client: httpx.AsyncClient, sender: Sender) -> None:
    response = await client.post(
        "/v1/send",
        content=b"{not json",
        headers={**sender.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"]


async def test_unregistered_from_domain_is_403_with_how_to_add_it(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    response = await post(client, sender, body(sender, **{"from": "me@elsewhere.test"}))
    assert response.status_code == 403
    [error] = response.json()["errors"]
    assert error["field"] == "from.email"
    assert "columba domains add elsewhere.test" in error["message"]
    assert await count_rows(db) == (0, 0, 0)


async def test_subdomain_of_a_sending_domain_may_send(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    response = await post(client, sender, body(sender, **{"from": "news@mail.sender.test"}))
    assert response.status_code == 202


async def test_other_accounts_domain_is_403(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    from tests.support import make_key

    stranger = await make_key(db, account="stranger", scopes=None)
    response = await client.post(
        "/v1/send", json=body(sender), headers={"Authorization": f"Bearer {stranger}"}
    )
    assert response.status_code == 403


@pytest_asyncio.fixture
async def small_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An API whose message size limit is 64 KB."""
    limited = settings.model_copy(update={"max_message_size": 64 * 1024})
    async with (
        ApiServer.running(limited) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        yield http


async def test_message_over_the_size_limit_is_413(
    small_api: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    attachment = base64.b64encode(b"x" * 60 * 1024).decode()
    oversize = body(
        sender,
        text="y" * 8 * 1024,
        attachments=[{"content": attachment, "filename": "big.bin"}],
    )
    response = await post(small_api, sender, oversize)
    assert response.status_code == 413
    assert "limit" in response.json()["errors"][0]["message"]
    assert await count_rows(db) == (0, 0, 0)


async def test_request_body_over_the_limit_is_413_before_parsing(
    small_api: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    response = await post(small_api, sender, body(sender, text="z" * 200 * 1024))
    assert response.status_code == 413
    assert response.json() == {
        "errors": [{"message": "content too large", "field": None, "help": None}]
    }
    assert await count_rows(db) == (0, 0, 0)


async def test_accepted_message_writes_message_recipients_and_processed_events(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    response = await post(
        client,
        sender,
        body(sender, to=["a@example.test", "b@example.test"], bcc=["c@example.test"]),
    )
    assert response.status_code == 202
    accepted = response.json()
    assert [r["email"] for r in accepted["recipients"]] == [
        "a@example.test",
        "b@example.test",
        "c@example.test",
    ]
    assert await count_rows(db) == (1, 3, 3)


def metadata_of(size: int) -> dict[str, str]:
    """Metadata of exactly `size` bytes as compact JSON (`{"k":"…"}`)."""
    return {"k": "x" * (size - len('{"k":""}'))}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"metadata": metadata_of(10_001)}, "metadata"),
        (
            {"to": [], "recipients": [{"to": "a@example.test", "metadata": metadata_of(10_001)}]},
            "recipients.0.metadata",
        ),
    ],
)
async def test_metadata_is_capped_as_sendgrid_caps_custom_args(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    overrides: dict[str, Any],
    field: str,
) -> None:
    response = await post(client, sender, body(sender, **overrides))
    assert response.status_code == 400, response.text
    message = "The metadata parameter may not exceed 10,000 bytes."
    assert {"message": message, "field": field, "help": None} in response.json()["errors"]
    assert await count_rows(db) == (0, 0, 0)
    at_the_cap = await post(client, sender, body(sender, metadata=metadata_of(10_000)))
    assert at_the_cap.status_code == 202, at_the_cap.text
