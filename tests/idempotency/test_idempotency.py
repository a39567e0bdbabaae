"""Idempotency-Key on both send endpoints: the database's unique constraint decides, so a
retried or concurrent request never sends twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.db import Database
from app.idempotency import service as idempotency
from app.messages.models import Message
from tests.support import Sender

V1 = "/v1/send"
V3 = "/v3/mail/send"


def v1_body(sender: Sender, subject: str = "Order 1") -> dict[str, Any]:
    """A native send."""
    return {"from": sender.address(), "to": ["a@example.test"], "subject": subject, "text": "x"}


def v3_body(sender: Sender, subject: str = "Order 1") -> dict[str, Any]:
    """A SendGrid send."""
    return {
        "personalizations": [{"to": [{"email": "a@example.test"}]}],
        "from": {"email": sender.address()},
        "subject": subject,
        "content": [{"type": "text/plain", "value": "x"}],
    }


BODIES: dict[str, Callable[..., dict[str, Any]]] = {V1: v1_body, V3: v3_body}


async def post(
    client: httpx.AsyncClient, sender: Sender, path: str, body: dict[str, Any], key: str
) -> httpx.Response:
    """POST with an Idempotency-Key."""
    headers = {**sender.headers, "Idempotency-Key": key}
    return await client.post(path, json=body, headers=headers)


async def messages(db: Database) -> int:
    """Messages in the database."""
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


def identity(response: httpx.Response) -> Any:
    """What identifies the answer: the body (v1) or X-Message-Id (v3)."""
    return response.json() if response.content else response.headers["X-Message-Id"]


@pytest.mark.parametrize("path", [V1, V3])
async def test_same_key_same_body_returns_the_stored_answer_and_sends_once(
    client: httpx.AsyncClient, sender: Sender, db: Database, path: str
) -> None:
    body = BODIES[path](sender)
    first = await post(client, sender, path, body, "order-1")
    second = await post(client, sender, path, body, "order-1")
    assert first.status_code == second.status_code == 202
    assert identity(first) == identity(second)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await messages(db) == 1


@pytest.mark.parametrize("path", [V1, V3])
async def test_same_key_different_body_is_422(
    client: httpx.AsyncClient, sender: Sender, db: Database, path: str
) -> None:
    assert (await post(client, sender, path, BODIES[path](sender), "k")).status_code == 202
    other = await post(client, sender, path, BODIES[path](sender, "Order 2"), "k")
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await messages(db) == 1


@pytest.mark.parametrize("path", [V1, V3])
async def test_a_request_while_the_first_is_in_flight_is_409(
    client: httpx.AsyncClient, sender: Sender, db: Database, path: str
) -> None:
    body = BODIES[path](sender)
    async with db.session() as session:
        claim = await idempotency.begin(
            session,
            account_id=sender.account_id,
            key="busy",
            fingerprint=idempotency.fingerprint("POST", path, json.dumps(body).encode()),
            ttl=timedelta(hours=24),
            lock=timedelta(seconds=60),
        )
    assert isinstance(claim, idempotency.Claim)
    response = await post(client, sender, path, body, "busy")
    assert response.status_code == 409
    assert await messages(db) == 0


async def test_a_claim_whose_request_died_is_taken_over_after_its_lock(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    body = v1_body(sender)
    async with db.session() as session:
        await idempotency.begin(
            session,
            account_id=sender.account_id,
            key="orphan",
            fingerprint=idempotency.fingerprint("POST", V1, json.dumps(body).encode()),
            ttl=timedelta(hours=24),
            lock=timedelta(seconds=60),
        )
    travel(timedelta(seconds=61))
    response = await post(client, sender, V1, body, "orphan")
    assert response.status_code == 202
    assert await messages(db) == 1


async def test_a_failed_request_releases_its_key(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    bad = {**v1_body(sender), "from": "me@unknown-domain.test"}
    assert (await post(client, sender, V1, bad, "retry-me")).status_code == 403
    assert (await post(client, sender, V1, bad, "retry-me")).status_code == 403  # not 409
    assert (await post(client, sender, V1, v1_body(sender), "retry-me")).status_code == 202


async def test_keys_expire_after_the_ttl(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    body = v1_body(sender)
    first = await post(client, sender, V1, body, "daily")
    travel(timedelta(hours=24, seconds=1))
    again = await post(client, sender, V1, body, "daily")
    assert again.status_code == 202
    assert again.json()["id"] != first.json()["id"]
    assert await messages(db) == 2
    async with db.session() as session:
        travel(timedelta(hours=25))
        assert await idempotency.purge_expired(session) == 1
        await session.commit()


async def test_keys_are_per_account_and_checked(client: httpx.AsyncClient, sender: Sender) -> None:
    response = await post(client, sender, V1, v1_body(sender), "x" * 256)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("path", [V1, V3])
async def test_concurrent_identical_requests_send_exactly_once(
    client: httpx.AsyncClient, sender: Sender, db: Database, path: str
) -> None:
    body = BODIES[path](sender)
    responses = await asyncio.gather(
        *(post(client, sender, path, body, "stampede") for _ in range(12))
    )
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {202, 409}, codes
    accepted = [identity(r) for r in responses if r.status_code == 202]
    assert accepted
    assert all(a == accepted[0] for a in accepted)
    assert await messages(db) == 1
    # Once the first has answered, every retry gets its answer.
    retry = await post(client, sender, path, body, "stampede")
    assert retry.status_code == 202
    assert identity(retry) == accepted[0]


async def test_a_late_failure_does_not_release_a_claim_taken_over_since(
    sender: Sender, db: Database, travel: Callable[[timedelta], None]
) -> None:
    """A request that outlived its lock and then failed leaves the key to the request that
    took it over (which would otherwise get a 409 when it stores its answer)."""

    async def claim() -> idempotency.Claim | idempotency.StoredResponse | None:
        async with db.session() as session:
            outcome = await idempotency.begin(
                session,
                account_id=sender.account_id,
                key="slow",
                fingerprint=idempotency.fingerprint("POST", V1, b"{}"),
                ttl=timedelta(hours=24),
                lock=timedelta(seconds=60),
            )
            await session.commit()
        return outcome

    first = await claim()
    assert isinstance(first, idempotency.Claim)
    travel(timedelta(seconds=61))
    second = await claim()
    assert isinstance(second, idempotency.Claim)
    async with db.session() as session:
        await idempotency.release(session, claim=first)  # the first request fails, late
    async with db.session() as session:
        await idempotency.complete(
            session, claim=second, response=idempotency.StoredResponse(202, {"id": "m"})
        )
        await session.commit()
