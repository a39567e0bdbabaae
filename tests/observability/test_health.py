"""/healthz and /readyz on the API and on the metrics port of the other processes: ready when
the database answers at the migrations' head and Redis answers; 503 with the reason if not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from app.core import migrate
from app.core.config import Settings
from app.core.db import Database
from app.observability.health import migration_heads
from app.observability.server import ObservabilityServer
from tests.fakes.mx import free_port
from tests.support import ApiServer, Sender, make_key

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def unreachable_database(settings: Settings, tmp_path: Path) -> str:
    """A database URL of the run's dialect that nothing answers at: for SQLite a file that
    does not exist, opened read-only (so it cannot be created)."""
    if settings.is_sqlite:
        return f"sqlite+aiosqlite:///file:{tmp_path / 'missing.db'}?mode=ro&uri=true"
    return "postgresql+asyncpg://postgres@127.0.0.1:1/columba"


@asynccontextmanager
async def side_server(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An ObservabilityServer on a free port, and a client for it."""
    server = ObservabilityServer(settings, queue=True)
    port = await server.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield http
    finally:
        await server.close()


def checks_of(response: httpx.Response) -> dict[str, Any]:
    """The per-check statuses of a /readyz answer."""
    body: dict[str, Any] = response.json()
    return {name: check["status"] for name, check in body["checks"].items()}


async def test_the_api_is_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert checks_of(response) == {"database": "ok", "migrations": "ok", "redis": "ok"}
    assert (await client.get("/healthz")).status_code == 200


async def test_the_api_is_not_ready_without_its_database(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the data directory it makes of a `file:` URL lands here
    broken = settings.model_copy(update={"database_url": unreachable_database(settings, tmp_path)})
    async with ApiServer.running(broken) as api, httpx.AsyncClient(base_url=api.url) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unready"
    assert checks_of(response) == {"database": "fail", "migrations": "fail", "redis": "ok"}


def one_short_of_head(url: str) -> str:
    """The revision just before head ("base" while the baseline is the only one)."""
    scripts = ScriptDirectory.from_config(migrate.alembic_config(url))
    head = scripts.get_revision("head")
    assert head is not None
    previous = head.down_revision
    assert previous is None or isinstance(previous, str)  # one linear history
    return previous or "base"


async def test_not_ready_when_migrations_are_behind(settings: Settings, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    behind = one_short_of_head(url)
    # Up to head and back, so that the version table exists even when `behind` is base.
    await asyncio.to_thread(migrate.upgrade, url)
    await asyncio.to_thread(command.downgrade, migrate.alembic_config(url), behind)
    async with side_server(settings.model_copy(update={"database_url": url})) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert checks_of(response) == {"database": "ok", "migrations": "fail", "redis": "ok"}
    detail = response.json()["checks"]["migrations"]["detail"]
    assert f"database at {'nothing' if behind == 'base' else behind};" in detail
    assert all(head in detail for head in migration_heads())
    assert "columba migrate" in detail


async def test_ready_while_a_newer_release_has_migrated(settings: Settings, tmp_path: Path) -> None:
    """A rolling deploy runs `columba migrate` before replacing the old processes: a revision
    this code does not know is newer, and the old processes stay in the load balancer."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'newer.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    database = Database(settings.model_copy(update={"database_url": url}))
    try:
        async with database.session() as session, session.begin():
            await session.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    finally:
        await database.dispose()
    async with side_server(settings.model_copy(update={"database_url": url})) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert checks_of(response) == {"database": "ok", "migrations": "ok", "redis": "ok"}
    detail = response.json()["checks"]["migrations"]["detail"]
    assert detail == "database at f00d, newer than this code: ready"


async def test_not_ready_when_redis_is_down(settings: Settings) -> None:
    async with side_server(settings.model_copy(update={"redis_url": UNREACHABLE_REDIS})) as http:
        response = await http.get("/readyz")
        alive = await http.get("/healthz")
    assert response.status_code == 503
    assert checks_of(response) == {"database": "ok", "migrations": "ok", "redis": "fail"}
    assert alive.status_code == 200  # alive all the same: it is readiness that fails


async def test_the_metrics_port_serves_health_and_guarded_metrics(
    settings: Settings, sender: Sender, db: Database
) -> None:
    key = await make_key(db, account=sender.account_name, scopes=["metrics.read"])
    async with side_server(settings) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 401
        mail_only = await make_key(db, account=sender.account_name, scopes=["mail.send"])
        forbidden = await http.get("/metrics", headers={"Authorization": f"Bearer {mail_only}"})
        assert forbidden.status_code == 403
        scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert scraped.status_code == 200
        assert "columba_queue_recipients" in scraped.text
        assert (await http.get("/nowhere")).status_code == 404
        assert (await http.post("/metrics")).status_code == 405


async def test_the_metrics_port_allows_internal_addresses(settings: Settings) -> None:
    allowing = settings.model_copy(update={"metrics_allow_ips": ("127.0.0.0/8",)})
    async with side_server(allowing) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert "columba_smtp_connections" in response.text


async def test_a_slow_client_is_dropped(settings: Settings) -> None:
    port = free_port()
    server = ObservabilityServer(settings)
    await server.start("127.0.0.1", port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        garbage_reader, garbage = await asyncio.open_connection("127.0.0.1", port)
        garbage.write(b"\x00\x01 not http\r\n\r\n")
        await garbage.drain()
        assert await asyncio.wait_for(garbage_reader.read(), 5) == b""  # closed, no answer
        garbage.close()
    finally:
        await server.close()
