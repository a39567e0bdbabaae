"""Group commit of the send APIs (app.messages.committer): concurrent sends share
transactions, each is answered only once committed, and one failing send fails alone."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.accounts import service as accounts
from app.core.config import Settings
from app.core.db import Database
from app.core.queue import Queue
from app.events.models import Event
from app.messages import service
from app.messages.committer import SOLO_RECIPIENTS, SendCommitter
from app.messages.models import Message, Recipient
from app.messages.schemas import SendRequest
from tests.support import Sender

SENDS = 30


class CountingCommitter(SendCommitter):
    """Counts the transactions it writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transactions: list[int] = []

    async def _write(self, sends: list[service.Checked]) -> list[service.Accepted]:
        self.transactions.append(len(sends))
        return await super()._write(sends)


async def checked_send(db: Database, sender: Sender, settings: Settings, to: str) -> Any:
    """A send to `to` that passed the checks (in a session of its own, closed after)."""
    request = SendRequest.model_validate(
        {"from": sender.address(), "to": [to], "subject": "Hi", "text": "Hello."}
    )
    async with db.session() as session:
        principal = await accounts.authenticate(session, plaintext=sender.key)
        assert principal is not None
        return await service.check(
            session,
            principal=principal,
            submission=request.submission(),
            policy=service.policy_from(settings),
        )


async def count(db: Database, query: Any) -> int:
    async with db.session() as session:
        return int((await session.execute(query)).scalar_one())


async def test_concurrent_sends_share_transactions_and_all_commit(
    db: Database, sender: Sender, settings: Settings, redis_url: str
) -> None:
    queue = Queue(redis_url)
    committer = CountingCommitter(db, queue, concurrency=1)
    try:
        sends = [
            await checked_send(db, sender, settings, f"r{i}@example.test") for i in range(SENDS)
        ]
        accepted = await asyncio.gather(*(committer.submit(send) for send in sends))
    finally:
        await queue.close()
    assert sorted(a.message_id for a in accepted) == sorted(s.message.id for s in sends)
    assert sum(committer.transactions) == SENDS
    assert len(committer.transactions) < SENDS  # sends waiting together shared a transaction
    assert await count(db, select(func.count(Message.id))) == SENDS
    assert await count(db, select(func.count(Recipient.id))) == SENDS
    assert await count(db, select(func.count(Event.id)).where(Event.type == "processed")) == SENDS


async def test_a_failing_send_fails_alone(
    db: Database, sender: Sender, settings: Settings, redis_url: str
) -> None:
    queue = Queue(redis_url)
    committer = CountingCommitter(db, queue, concurrency=1)
    good = [await checked_send(db, sender, settings, f"g{i}@example.test") for i in range(5)]
    bad_send = await checked_send(db, sender, settings, "bad@example.test")
    # A domain that does not exist (deleted since the check, say): the INSERT breaks its FK.
    bad_message = bad_send.message
    bad_message.domain_id = "no-such-domain"
    bad = dataclasses.replace(bad_send, message=bad_message)
    try:
        outcomes = await asyncio.gather(
            *(committer.submit(send) for send in [*good[:3], bad, *good[3:]]),
            return_exceptions=True,
        )
    finally:
        await queue.close()
    assert isinstance(outcomes[3], IntegrityError)
    assert all(isinstance(o, service.Accepted) for i, o in enumerate(outcomes) if i != 3)
    assert await count(db, select(func.count(Message.id))) == 5
    assert await count(db, select(func.count(Recipient.id))) == 5


async def test_the_api_answers_concurrent_sends_each_with_its_own_message(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    async def one(index: int) -> dict[str, Any]:
        body = {"from": sender.address(), "to": [f"c{index}@example.test"], "subject": "Hi"}
        response = await client.post(
            "/v1/send", json={**body, "text": "Hello."}, headers=sender.headers
        )
        assert response.status_code == 202, response.text
        result: dict[str, Any] = response.json()
        return result

    answers = await asyncio.gather(*(one(i) for i in range(SENDS)))
    assert len({a["id"] for a in answers}) == SENDS
    for index, answer in enumerate(answers):
        [recipient] = answer["recipients"]
        assert recipient["email"] == f"c{index}@example.test"
    # Every 202 came after the commit: the rows are there.
    assert await count(db, select(func.count(Message.id))) == SENDS


async def test_sandbox_sends_write_nothing(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    body = {
        "personalizations": [{"to": [{"email": "s@example.test"}]}],
        "from": {"email": sender.address()},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "x"}],
        "mail_settings": {"sandbox_mode": {"enable": True}},
    }
    response = await client.post("/v3/mail/send", json=body, headers=sender.headers)
    assert response.status_code == 200, response.text
    assert await count(db, select(func.count(Message.id))) == 0


async def test_a_bulk_send_is_written_in_its_own_transaction(
    db: Database, sender: Sender, settings: Settings, redis_url: str
) -> None:
    queue = Queue(redis_url)
    committer = CountingCommitter(db, queue, concurrency=1)
    addresses = [f"b{i}@example.test" for i in range(SOLO_RECIPIENTS + 1)]
    request = SendRequest.model_validate(
        {"from": sender.address(), "to": addresses, "subject": "Hi", "text": "Hello."}
    )
    try:
        async with db.session() as session:
            principal = await accounts.authenticate(session, plaintext=sender.key)
            assert principal is not None
            accepted = await committer.accept(
                session,
                principal=principal,
                submission=request.submission(),
                policy=service.policy_from(settings),
            )
    finally:
        await queue.close()
    assert committer.transactions == []  # not queued behind other sends
    assert len(accepted.recipients) == len(addresses)
    assert await count(db, select(func.count(Recipient.id))) == len(addresses)
