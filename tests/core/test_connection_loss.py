"""Pooled connections are not pinged before use: when the server drops them, a request gets
a 503 at worst (never a 500, never half-written), and the ones after it succeed; while the
server refuses connections, every request gets a 503."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from app.core.config import Settings
from app.core.db import Database
from app.messages.models import Message
from tests.fakes.mx import free_port
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


@pytest.mark.parametrize("path", ["/v1/send", "/v3/mail/send"])
async def test_requests_get_503_while_the_database_refuses_connections(
    settings: Settings, sender: Sender, path: str
) -> None:
    """ARCHITECTURE §5: 503, never 500, while the database is unreachable. asyncpg reports a
    refused connection as a bare OSError, which used to reach the catch-all (500)."""
    if settings.is_sqlite:
        pytest.skip("SQLite has no server to be unreachable")
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/columba"
    down = settings.model_copy(update={"database_url": nowhere})
    body: dict[str, Any] = {"from": sender.address(), "to": ["x@example.test"], "subject": "Hi"}
    if path == "/v1/send":
        body["text"] = "Hi"
    else:
        body = {
            "personalizations": [{"to": [{"email": "x@example.test"}]}],
            "from": {"email": sender.address()},
            "subject": "Hi",
            "content": [{"type": "text/plain", "value": "Hi"}],
        }
    async with ApiServer.running(down) as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.post(path, json=body, headers=sender.headers)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["errors"][0]["message"] == "the database is unavailable; retry"
