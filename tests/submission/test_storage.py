"""The 250 comes only after the commit, a database failure answers 451 4.3.0 with nothing
written, and a stored message is signed as stored, identically on every attempt."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from app.core.db import Database
from app.delivery.signing import DkimSigner
from app.domains.service import dkim_keys
from app.events.models import Event
from app.messages import dispatch
from app.messages.compose import Composer, Copy
from app.messages.models import Message, Recipient
from app.submission.models import SmtpSubmission
from tests.conftest import SECRET_KEY
from tests.submission.clients import QUEUED, Listener
from tests.support import Sender

MESSAGE = b"From: noreply@sender.test\r\nTo: a@example.test\r\nSubject: stored\r\n\r\nHi.\r\n"


def send(listener: Listener, sender: Sender, rcpts: list[str]) -> tuple[int, bytes]:
    """One message; the reply to its end of data."""
    with listener.smtp(login=sender.key) as client:
        client.mail(sender.address())
        for rcpt in rcpts:
            client.rcpt(rcpt)
        return client.data(MESSAGE)


@contextlib.asynccontextmanager
async def failing_event_writes(db: Database) -> AsyncIterator[None]:
    """Make the database refuse the last write of an accept (the events) until the block ends."""
    async with db.session() as session:
        if db.settings.is_sqlite:
            await session.execute(text(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON events "
                "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
            ))  # fmt: skip
        else:
            await session.execute(text(
                "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$"
            ))  # fmt: skip
            await session.execute(text(
                "CREATE TRIGGER refuse_events BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION refuse_events()"
            ))  # fmt: skip
        await session.commit()
    try:
        yield
    finally:
        async with db.session() as session:
            if db.settings.is_sqlite:
                await session.execute(text("DROP TRIGGER refuse_events"))
            else:
                await session.execute(text("DROP TRIGGER refuse_events ON events"))
                await session.execute(text("DROP FUNCTION refuse_events()"))
            await session.commit()


async def _count(db: Database, model: type[object]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_database_failure_answers_451_and_writes_nothing(
    submission: Listener, sender: Sender, db: Database
) -> None:
    async with failing_event_writes(db):
        replies = await asyncio.gather(
            *(asyncio.to_thread(send, submission, sender, [f"{n}@example.test"]) for n in range(6))
        )  # concurrent messages may share the failing transaction: all of them are refused
    assert {code for code, _ in replies} == {451}
    assert all(reply.startswith(b"4.3.0") for _, reply in replies)
    for model in (Message, Recipient, Event, SmtpSubmission):
        assert await _count(db, model) == 0, model  # one transaction: all or nothing
    code, reply = await asyncio.to_thread(send, submission, sender, ["a@example.test"])
    assert code == 250, reply  # the client's retry goes through


async def test_the_250_comes_after_the_commit(
    submission: Listener, sender: Sender, db: Database
) -> None:
    def send_and_look() -> tuple[str, int]:
        code, reply = send(submission, sender, ["a@example.test", "b@example.test"])
        assert code == 250, reply
        found = QUEUED.search(f"{code} {reply.decode()}")
        assert found
        # Still inside the session: another connection already sees the committed rows.
        rows = asyncio.run_coroutine_threadsafe(_recipients_of(db, found.group(1)), loop)
        return found.group(1), rows.result(timeout=10)

    loop = asyncio.get_running_loop()
    _, recipients = await asyncio.to_thread(send_and_look)
    assert recipients == 2


async def _recipients_of(db: Database, message_id: str) -> int:
    async with db.session() as session:
        query = select(func.count()).where(Recipient.message_id == message_id)
        return int(await session.scalar(query) or 0)


async def test_stored_message_is_signed_identically_for_every_recipient_and_retry(
    submission: Listener, sender: Sender, db: Database
) -> None:
    code, reply = await asyncio.to_thread(
        send, submission, sender, ["a@example.test", "b@other.test"]
    )
    found = QUEUED.search(f"{code} {reply.decode()}")
    assert found
    async with db.session() as session:
        loaded = await dispatch.load_message(session, message_id=found.group(1))
        claim = await dispatch.claim(session, message_id=found.group(1), lease=timedelta(minutes=1))
    assert loaded.message.raw_mime is not None
    signer = DkimSigner(dkim_keys(loaded.domain, secret_key=SECRET_KEY.encode()))
    first = Composer(lambda _: signer).copies(loaded, claim.recipients)
    again = Composer(lambda _: signer).copies(loaded, claim.recipients)  # a retry, cache cold
    assert all(isinstance(copy, Copy) for copy in first + again)
    datas = {copy.data for copy in first + again if isinstance(copy, Copy)}
    assert len(datas) == 1  # CHECKLIST 26
    [data] = datas
    assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.test")
    assert data.endswith(loaded.message.raw_mime)  # signed as stored: nothing re-rendered


async def test_unexpected_quit_during_data_stores_nothing(
    submission: Listener, sender: Sender, db: Database
) -> None:
    def vanish() -> None:
        client = submission.smtp(login=sender.key)
        client.mail(sender.address())
        client.rcpt("a@example.test")
        client.docmd("DATA")
        client.send(MESSAGE)  # no end-of-data line
        client.close()

    await asyncio.to_thread(vanish)
    await asyncio.sleep(0.2)
    assert await _count(db, Message) == 0


async def test_mail_is_accepted_while_redis_is_down(
    start_submission: Callable[..., Awaitable[Listener]],
    sender: Sender,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: the rate limit, lockouts and wake-up cannot reach Redis.
    listener = await start_submission(redis_url="redis://127.0.0.1:1/0")
    code, reply = await asyncio.to_thread(send, listener, sender, ["a@example.test"])
    assert code == 250, reply  # the database holds it; the sweeper wakes a worker later
    assert await _count(db, Message) == 1
    assert "SMTP protections unavailable" in caplog.text


async def test_the_default_rate_applies_to_keys_without_their_own(
    start_submission: Callable[..., Awaitable[Listener]], sender: Sender
) -> None:
    listener = await start_submission(submission_rate_limit=1)

    def two_messages() -> list[int]:
        with listener.smtp(login=sender.key) as client:
            return [client.mail(sender.address())[0], client.rset()[0], client.mail("x@y.test")[0]]

    assert await asyncio.to_thread(two_messages) == [250, 250, 451]


async def test_concurrent_messages_share_transactions_but_not_refusals(
    submission: Listener, sender: Sender, db: Database
) -> None:
    def one(number: int) -> tuple[int, bytes]:
        author = sender.address() if number % 3 else "someone@elsewhere.test"
        data = f"From: {author}\r\nSubject: {number}\r\n\r\nHi.\r\n".encode()
        with submission.smtp(login=sender.key) as client:
            client.mail(sender.address())
            client.rcpt(f"r{number}@example.test")
            return client.data(data)

    replies = await asyncio.gather(*(asyncio.to_thread(one, n) for n in range(24)))
    codes = [code for code, _ in replies]
    assert codes == [550 if n % 3 == 0 else 250 for n in range(24)]
    ids = {QUEUED.findall(f"250 {reply.decode()}")[0] for code, reply in replies if code == 250}
    assert len(ids) == 16  # sixteen different messages
    assert await _count(db, Message) == 16
    assert await _count(db, SmtpSubmission) == 16
    assert await _count(db, Recipient) == 16
