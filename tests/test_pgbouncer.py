"""Columba through PgBouncer in transaction mode (COLUMBA_DATABASE_POOLER=pgbouncer): a private
PgBouncer in front of the machine's PostgreSQL, a database of the tests' own behind it, the
API, workers and migrations all connected through it."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from unittest import mock

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from app.core.config import Settings
from app.core.db import Database
from app.messages import dispatch
from tests.conftest import PG_URL
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.pooler import PgBouncer, pgbouncer_binary, private_pgbouncer
from tests.support import (
    ApiServer,
    Sender,
    create_test_database,
    drop_test_database,
    make_sender,
    migrate_database,
    run_worker,
)

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="PgBouncer pools PostgreSQL: run by `make test-pg`"),
    pytest.mark.skipif(
        pgbouncer_binary() is None,
        reason="PgBouncer is not installed (apt-get install pgbouncer; CI installs it)",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
POOL_SIZE = 4  # server connections PgBouncer may open: fewer than the clients' pools


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    """A private PgBouncer in transaction mode in front of the tests' PostgreSQL."""
    assert PG_URL
    with private_pgbouncer(PG_URL, pool_size=POOL_SIZE) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def direct_url() -> AsyncIterator[str]:
    """A database of this module's own on the machine's PostgreSQL (empty)."""
    assert PG_URL
    url = await create_test_database(PG_URL, "columba_pgbouncer_" + secrets.token_hex(4))
    yield url
    await drop_test_database(PG_URL, url)


@pytest_asyncio.fixture(scope="module")
async def pooled(
    settings: Settings, bouncer: PgBouncer, direct_url: str
) -> AsyncIterator[Settings]:
    """The test settings, connected through PgBouncer; the database migrated through it too
    (Alembic's DDL runs in one transaction, which transaction mode keeps together)."""
    through = bouncer.url_for(direct_url)
    # `columba migrate` reads the setting from the environment, as the processes do.
    with mock.patch.dict(os.environ, {"COLUMBA_DATABASE_POOLER": "pgbouncer"}):
        await migrate_database(through)
    yield settings.model_copy(update={"database_url": through, "database_pooler": "pgbouncer"})


@pytest_asyncio.fixture
async def pooled_db(pooled: Settings) -> AsyncIterator[Database]:
    """A database handle through PgBouncer, on tables emptied for this test."""
    database = Database(pooled)
    async with database.session() as session:
        await session.execute(text("DELETE FROM accounts"))  # cascades to everything sent
        await session.commit()
    yield database
    await database.dispose()


@pytest_asyncio.fixture
async def pooled_sender(pooled_db: Database, dns_server: FakeDNS, pooled: Settings) -> Sender:
    """An account, key and verified domain, created through PgBouncer."""
    return await make_sender(pooled_db, dns_server, pooled, account="acme", domain="sender.test")


async def send_each(http: httpx.AsyncClient, sender: Sender, addresses: list[str]) -> list[str]:
    """One POST /v1/send per address, all at once; the messages' ids."""

    async def one(address: str) -> str:
        body = {"from": sender.address(), "to": [address], "subject": "Hi", "text": "Hello."}
        response = await http.post("/v1/send", json=body, headers=sender.headers)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    return list(await asyncio.gather(*(one(address) for address in addresses)))


async def recorded_events(database: Database, message_ids: list[str]) -> dict[str, list[str]]:
    """Each message's event types in order, read through PgBouncer."""
    async with database.session() as session:
        rows = await session.execute(
            text("SELECT message_id, type FROM events WHERE message_id = ANY(:ids) ORDER BY id"),
            {"ids": message_ids},
        )
    events: dict[str, list[str]] = {message_id: [] for message_id in message_ids}
    for message_id, kind in rows:
        events[message_id].append(kind)
    return events


async def test_a_send_is_accepted_delivered_and_recorded_through_pgbouncer(
    pooled: Settings,
    pooled_db: Database,
    pooled_sender: Sender,
    mx: ScriptedMX,
    redis_url: str,
) -> None:
    async with ApiServer.running(pooled) as api, httpx.AsyncClient(base_url=api.url) as http:
        [message_id] = await send_each(http, pooled_sender, ["alice@example.test"])
        await run_worker(pooled, redis_url)
        [received] = await mx.wait_for(1)
        view = await http.get(f"/v1/messages/{message_id}", headers=pooled_sender.headers)

    assert received.rcpt_tos == ["alice@example.test"]
    assert view.status_code == 200, view.text
    assert [r["status"] for r in view.json()["recipients"]] == ["delivered"]
    assert await recorded_events(pooled_db, [message_id]) == {
        message_id: ["processed", "delivered"]
    }


async def test_two_workers_claim_concurrently_and_deliver_each_message_once(
    pooled: Settings,
    pooled_db: Database,
    pooled_sender: Sender,
    mx: ScriptedMX,
    redis_url: str,
    bouncer: PgBouncer,
    direct_url: str,
) -> None:
    addresses = [f"user{i}@example.test" for i in range(40)]
    async with ApiServer.running(pooled) as api, httpx.AsyncClient(base_url=api.url) as http:
        message_ids = await send_each(http, pooled_sender, addresses)
    # Two workers, each with its own pool, claim from the same queue at the same time: their
    # transactions interleave on PgBouncer's four server connections.
    jobs = await asyncio.gather(run_worker(pooled, redis_url), run_worker(pooled, redis_url))

    received = await mx.wait_for(len(addresses))
    assert sum(jobs) > 0
    delivered = sorted(rcpt for message in received for rcpt in message.rcpt_tos)
    assert delivered == sorted(addresses)  # every one, none twice
    events = await recorded_events(pooled_db, message_ids)
    assert {message_id: kinds for message_id, kinds in events.items()} == {
        message_id: ["processed", "delivered"] for message_id in message_ids
    }
    assert 0 < bouncer.server_connections(direct_url) <= POOL_SIZE


async def test_concurrent_claims_through_pgbouncer_never_share_a_recipient(
    pooled: Settings, pooled_db: Database, pooled_sender: Sender
) -> None:
    addresses = [f"user{i}@example.test" for i in range(60)]
    async with ApiServer.running(pooled) as api, httpx.AsyncClient(base_url=api.url) as http:
        await send_each(http, pooled_sender, addresses)
    claimers = [Database(pooled), Database(pooled)]  # two workers' pools

    async def claim_until_empty(database: Database) -> list[str]:
        """Lease a few due recipients per transaction until none is left."""
        taken: list[str] = []
        while True:
            async with database.session() as session:
                claim = await dispatch.claim(session, lease=pooled.lease_duration, limit=3)
                await session.commit()
            if not claim.recipients:
                return taken
            taken += [recipient.email for recipient in claim.recipients]

    try:
        # Three claimers per pool, six transactions in flight on four server connections.
        results = await asyncio.gather(
            *(claim_until_empty(database) for database in claimers for _ in range(3))
        )
    finally:
        for database in claimers:
            await database.dispose()
    claimed = [address for taken in results for address in taken]
    assert sorted(claimed) == sorted(addresses)  # every one, none twice
    assert sum(1 for taken in results if taken) > 1  # the claims did interleave


# One client process: a Database with the given pooler setting, one query, its outcome.
CLIENT = """
import asyncio, sys
from sqlalchemy import text
from app.core.config import Settings
from app.core.db import Database

async def main() -> None:
    database = Database(Settings(database_url=sys.argv[1], database_pooler=sys.argv[2]))
    try:
        async with database.session() as session:
            await session.execute(text("SELECT count(*) FROM accounts"))
    finally:
        await database.dispose()

asyncio.run(main())
"""


def run_client(url: str, pooler: str) -> subprocess.CompletedProcess[str]:
    """CLIENT in a process of its own (asyncpg numbers statements per process)."""
    command = [sys.executable, "-c", CLIENT, url, pooler]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("pooler", ["none", "pgbouncer"])
async def test_two_processes_statements_collide_only_without_the_setting(
    pooled: Settings, direct_url: str, pooler: str
) -> None:
    """Why COLUMBA_DATABASE_POOLER exists: two processes name their prepared statements alike
    (asyncpg counts from 1 in each) and, in transaction mode, a statement one process left on
    a server connection is there when PgBouncer hands that connection to the other (here the
    only one, so that the meeting is certain)."""
    assert PG_URL
    with private_pgbouncer(PG_URL, pool_size=1) as single:
        url = single.url_for(direct_url)
        first = await asyncio.to_thread(run_client, url, pooler)
        second = await asyncio.to_thread(run_client, url, pooler)
    assert first.returncode == 0, first.stderr
    if pooler == "none":
        assert second.returncode != 0
        assert "DuplicatePreparedStatementError" in second.stderr, second.stderr
    else:
        assert second.returncode == 0, second.stderr
