"""The worker's message cache outlives the session that loaded it (issue 17): a claim whose
commit failed (PostgreSQL restarting) rolled its session back, which expired the messages it
had just cached; every later batch of those messages then failed on a detached row until the
cache let them go, and their recipients' leases ran out, again and again."""

from __future__ import annotations

import httpx

from app.core.db import Database
from app.messages.dispatch import MessageCache
from tests.support import Sender


async def test_cached_messages_survive_a_rollback_of_their_session(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    body = {"from": sender.address(), "to": ["x@example.test"], "subject": "Kept", "text": "Hi"}
    response = await client.post("/v1/send", json=body, headers=sender.headers)
    assert response.status_code == 202, response.text
    message_id = response.json()["id"]
    cache = MessageCache(ttl=60, max_bytes=1 << 20)
    async with db.session() as session:
        await cache.load(session, [message_id])
        await session.rollback()  # as when the claim's commit fails
    cached = cache.get(message_id)
    assert cached is not None
    assert cached.message.subject == "Kept"
    assert cached.domain.verified_at is not None
