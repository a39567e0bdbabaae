"""A sending domain that lost its verification is refused over SMTP with 550."""

from __future__ import annotations

import asyncio
import time

from app.core.db import Database
from app.domains.models import Domain
from tests.submission.clients import Listener
from tests.support import Sender


def send(listener: Listener, sender: Sender) -> tuple[int, bytes]:
    """One message; the reply to the end of data (blocking: use a thread)."""
    data = f"From: {sender.address()}\r\nSubject: hi\r\n\r\nHello.\r\n".encode()
    with listener.smtp(login=sender.key) as client:
        client.mail(sender.address())
        client.rcpt("a@example.test")
        return client.data(data)


async def test_a_domain_no_longer_verified_gets_550(
    submission: Listener, sender: Sender, db: Database
) -> None:
    code, reply = await asyncio.to_thread(send, submission, sender)
    assert code == 250, reply
    async with db.session() as session:
        (await session.get_one(Domain, sender.domain.id)).verified_at = None
        await session.commit()
    # Unverified behind the listener's back (as the worker's re-check does, in another
    # process): the cached domain holds for at most AUTH_CACHE_TTL (1 s), then 550.
    unverified_at = time.monotonic()
    code, reply = await asyncio.to_thread(send, submission, sender)
    while code == 250:
        assert time.monotonic() - unverified_at <= 1.5, "the cache outlived AUTH_CACHE_TTL"
        await asyncio.sleep(0.1)
        code, reply = await asyncio.to_thread(send, submission, sender)
    assert code == 550, reply
    assert reply.startswith(b"5.7.1 The sending domain sender.test is not verified")
