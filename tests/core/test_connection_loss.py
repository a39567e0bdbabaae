"""Pooled connections are not pinged before use: when the server drops them, a request gets
a 503 at worst (never a 500, never half-written), and the ones after it succeed."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select, text

from app.core.db import Database
from app.messages.models import Message
from tests.support import ApiServer, Sender


async def test_requests_recover_after_the_server_drops_every_connection(
    client: httpx.AsyncClient, sender: Sender, db: Database, api: ApiServer
) -> None:
    if api.settings.is_sqlite:
        pytest.skip("SQLite has no server to drop connections")
    body = {"from": sender.address(), "to": ["x@example.test"], "subject": "Hi", "text": "Hi"}
    for _ in range(3):  # the API's pool now holds open connections
        assert (await client.post("/v1/send", json=body, headers=sender.headers)).status_code == 202
    async with db.session() as session:
        await session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    statuses = [
        (await client.post("/v1/send", json=body, headers=sender.headers)).status_code
        for _ in range(5)
    ]
    assert set(statuses) <= {202, 503}, statuses
    assert statuses[-1] == 202
    await db.dispose()  # the tests' own pool lost its connections too
    async with db.session() as session:
        count = await session.scalar(select(func.count()).select_from(Message))
    assert count == 3 + statuses.count(202)
