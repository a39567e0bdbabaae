"""The listener's group commit: messages whose DATA ends together share one transaction (one
statement per table) and one delivery wake-up, yet each client learns its own outcome; a
failed transaction refuses every message of it with 451 and leaves nothing behind."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, func, select

from app.accounts import service as accounts
from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.core.ids import new_id
from app.core.queue import Queue
from app.delivery.content import Address
from app.events.models import Event
from app.messages.models import Message, Recipient
from app.messages.service import policy_from
from app.submission.committer import GroupCommitter
from app.submission.models import SmtpSubmission
from app.submission.prepare import Arrival, PreparedMessage, prepare
from app.submission.replies import Refusal
from app.submission.service import Transaction
from tests.submission.test_storage import failing_event_writes
from tests.support import Sender


class RecordingQueue(Queue):
    """The real queue, remembering which ids each wake-up named."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url)
        self.wakes: list[list[str]] = []

    async def wake_deliveries(self, message_ids: Iterable[str]) -> int:
        """Remember the call, then wake."""
        ids = list(message_ids)
        self.wakes.append(ids)
        return await super().wake_deliveries(ids)


@contextmanager
def commits(db: Database) -> Iterator[list[int]]:
    """Count the transactions committed and rolled back while the block runs."""
    counted = [0, 0]

    def committed(_: object) -> None:
        counted[0] += 1

    def rolled_back(_: object) -> None:
        counted[1] += 1

    engine = db.engine.sync_engine
    event.listen(engine, "commit", committed)
    event.listen(engine, "rollback", rolled_back)
    try:
        yield counted
    finally:
        event.remove(engine, "commit", committed)
        event.remove(engine, "rollback", rolled_back)


async def _message(db: Database, sender: Sender, number: int, *, extra: str = "") -> tuple[
    Transaction, PreparedMessage
]:  # fmt: skip
    """A transaction as the listener hands it to the committer."""
    async with db.session() as session:
        found = await accounts.principal_by_prefix(session, prefix=sender.key.split(".")[1])
    assert found is not None
    transaction = Transaction(
        message_id=new_id(),
        api_key_id=found[1].api_key.id,
        mail_from=sender.address(),
        recipients=(f"r{number}@example.test",),
        size=100,
        client_ip="192.0.2.1",
        helo="client.test",
        tls_version="TLSv1.3",
        accepted_at=clock.now(),
    )
    raw = (
        f"From: {sender.address()}\r\nTo: r{number}@example.test\r\nSubject: {number}\r\n"
        f"{extra}\r\nHello {number}.\r\n"
    ).encode()
    arrival = Arrival(transaction.message_id, "mta.test", "client.test", "192.0.2.1", clock.now())
    return transaction, prepare(raw, arrival, max_schedule_ahead=timedelta(days=3))


async def _count(db: Database, model: type[object]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_messages_ending_together_share_one_transaction_and_one_wake_up(
    db: Database, settings: Settings, sender: Sender, redis_url: str
) -> None:
    queue = RecordingQueue(redis_url)
    committer = GroupCommitter(db, queue, policy_from(settings), concurrency=1)
    later = int((clock.now() + timedelta(hours=1)).timestamp())
    scheduled = f"X-SMTPAPI: {json.dumps({'send_at': later})}\r\n"
    items = [await _message(db, sender, n, extra=scheduled if n == 7 else "") for n in range(8)]
    try:
        with commits(db) as counted:
            # Stored in one loop iteration: all eight wait when the first transaction starts.
            ids = await asyncio.gather(*(committer.store(t, p) for t, p in items))
    finally:
        await committer.close()
        await queue.close()
    assert counted[0] == 1  # one transaction for the eight messages
    assert ids == [transaction.message_id for transaction, _ in items]  # each its own id
    for model in (Message, Recipient, Event, SmtpSubmission):
        assert await _count(db, model) == 8, model
    # One wake-up after the commit, for every message but the scheduled one.
    assert queue.wakes == [ids[:7]]


async def test_a_refused_message_leaves_its_transaction_to_the_others(
    db: Database, settings: Settings, sender: Sender, redis_url: str
) -> None:
    queue = RecordingQueue(redis_url)
    committer = GroupCommitter(db, queue, policy_from(settings), concurrency=1)
    items = [await _message(db, sender, n) for n in range(3)]
    # The second author writes from a domain the account does not own.
    stranger = dataclasses.replace(items[1][1], sender=Address("someone@elsewhere.test"))
    items[1] = (items[1][0], stranger)
    try:
        outcomes = await asyncio.gather(
            *(committer.store(t, p) for t, p in items), return_exceptions=True
        )
    finally:
        await committer.close()
        await queue.close()
    assert outcomes[0] == items[0][0].message_id
    assert isinstance(outcomes[1], Refusal)
    assert outcomes[1].code == 550
    assert outcomes[2] == items[2][0].message_id
    assert await _count(db, Message) == 2
    assert queue.wakes == [[outcomes[0], outcomes[2]]]


async def test_a_failed_transaction_refuses_every_message_of_it_and_writes_nothing(
    db: Database, settings: Settings, sender: Sender, redis_url: str
) -> None:
    queue = RecordingQueue(redis_url)
    committer = GroupCommitter(db, queue, policy_from(settings), concurrency=1)
    items = [await _message(db, sender, n) for n in range(5)]
    try:
        async with failing_event_writes(db):
            with commits(db) as counted:
                outcomes = await asyncio.gather(
                    *(committer.store(t, p) for t, p in items), return_exceptions=True
                )
    finally:
        await committer.close()
        await queue.close()
    assert counted == [0, 1]  # the one shared transaction, rolled back
    assert all(isinstance(o, Refusal) and o.reply.startswith("451 4.3.0") for o in outcomes)
    for model in (Message, Recipient, Event, SmtpSubmission):
        assert await _count(db, model) == 0, model
    assert queue.wakes == []  # nothing stored, nothing to wake
