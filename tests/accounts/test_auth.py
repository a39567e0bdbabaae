"""API keys at the HTTP edge: 401 for missing, unknown and revoked keys, 403 without scope."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import ApiKey
from app.core.db import Database
from tests.support import Sender, make_key

MESSAGE = {"subject": "Hi", "text": "Hello", "to": ["x@example.test"]}


def body(sender: Sender) -> dict[str, Any]:
    """A valid send body from the sender's domain."""
    return {"from": sender.address(), **MESSAGE}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The single error of a SendGrid-shaped error body."""
    [error] = response.json()["errors"]
    assert set(error) == {"message", "field", "help"}
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer SG.unknown.secret", "Bearer not-even-a-key"],
)
async def test_missing_or_unknown_key_is_401(
    client: httpx.AsyncClient, sender: Sender, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = await client.post("/v1/send", json=body(sender), headers=headers)
    assert response.status_code == 401
    assert error_of(response)["message"]


async def test_wrong_secret_for_a_real_prefix_is_401(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    prefix = sender.key.split(".")[1]
    forged = {"Authorization": f"Bearer SG.{prefix}.{'A' * 43}"}
    response = await client.post("/v1/send", json=body(sender), headers=forged)
    assert response.status_code == 401


async def test_revoked_key_is_401_on_the_next_request(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    first = await client.post("/v1/send", json=body(sender), headers=sender.headers)
    assert first.status_code == 202
    async with db.session() as session:
        assert await accounts.revoke_key(session, prefix=sender.key.split(".")[1])
        await session.commit()
    response = await client.post("/v1/send", json=body(sender), headers=sender.headers)
    assert response.status_code == 401


async def test_key_without_mail_send_scope_is_403(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    key = await make_key(db, account=sender.account_name, scopes=["messages.read"])
    response = await client.post(
        "/v1/send", json=body(sender), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403
    assert "mail.send" in error_of(response)["message"]


async def test_key_without_messages_read_scope_cannot_read(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    accepted = await client.post("/v1/send", json=body(sender), headers=sender.headers)
    key = await make_key(db, account=sender.account_name, scopes=["mail.send"])
    response = await client.get(
        f"/v1/messages/{accepted.json()['id']}", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403


async def test_another_accounts_message_is_404(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    accepted = await client.post("/v1/send", json=body(sender), headers=sender.headers)
    stranger = await make_key(db, account="someone-else", scopes=None)
    response = await client.get(
        f"/v1/messages/{accepted.json()['id']}", headers={"Authorization": f"Bearer {stranger}"}
    )
    assert response.status_code == 404
    assert error_of(response)["message"] == "message not found"


async def test_only_a_hash_of_the_key_is_stored(sender: Sender, db: Database) -> None:
    async with db.session() as session:
        stored = (await session.execute(select(ApiKey))).scalars().all()
    _, prefix, secret = sender.key.split(".")
    [key] = [key for key in stored if key.prefix == prefix]
    assert key.secret_hash == accounts.hash_secret(secret)
    assert all(secret not in (k.secret_hash, k.prefix, k.name) for k in stored)


async def test_use_is_recorded(client: httpx.AsyncClient, sender: Sender, db: Database) -> None:
    await client.post("/v1/send", json=body(sender), headers=sender.headers)
    async with db.session() as session:
        key = (
            await session.execute(select(ApiKey).where(ApiKey.prefix == sender.key.split(".")[1]))
        ).scalar_one()
    assert key.last_used_at is not None
