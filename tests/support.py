"""Helpers behind the fixtures: test databases, the live API server, senders, the worker."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import dkim
import dns.resolver
import uvicorn
from fastapi import FastAPI
from sqlalchemy import delete, event, text
from sqlalchemy.engine import make_url

from app.accounts import service as accounts
from app.core import migrate
from app.core.config import Settings
from app.core.db import Base, Database
from app.delivery.resolver import make_resolver
from app.domains import service as domains
from app.domains.models import Domain
from app.main import create_app
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import free_port
from worker.runtime import Runtime
from worker.settings import build_worker


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    """A plain postgresql:// DSN for asyncpg from a SQLAlchemy URL."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def create_test_database(base_url: str, name: str) -> str:
    """Create database `name` on the server of `base_url`; returns its SQLAlchemy URL."""
    connection = await asyncpg.connect(_asyncpg_dsn(base_url, "postgres"))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_test_database(base_url: str, url: str) -> None:
    """Drop the session's database."""
    name = make_url(url).database
    connection = await asyncpg.connect(_asyncpg_dsn(base_url, "postgres"))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def migrate_database(url: str) -> None:
    """Apply the migrations (Alembic's env runs its own event loop, so use a thread)."""
    await asyncio.to_thread(migrate.upgrade, url)


async def truncate_all(database: Database) -> None:
    """Empty every table and restart PostgreSQL's sequences. DELETE rather than TRUNCATE:
    a test leaves a few rows, and TRUNCATE of every table cost 360 ms per test on PostgreSQL
    (new files for each table), DELETE 9 ms; the sequences restart as TRUNCATE's RESTART
    IDENTITY did, so ids are as a fresh database gives them."""
    async with database.session() as session:
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(delete(table))
        if not database.settings.is_sqlite:
            sequences = await session.scalars(
                text("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")
            )
            for name in sequences.all():
                await session.execute(text(f'ALTER SEQUENCE "{name}" RESTART'))
        await session.commit()


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: the test process owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class ApiServer:
    """A live uvicorn server of the API."""

    url: str
    settings: Settings
    app: FastAPI  # for tests that look at the app's state

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, settings: Settings) -> AsyncIterator[ApiServer]:
        """Serve `create_app(settings)` on a free loopback port until the block ends."""
        port = free_port()
        app = create_app(settings)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, access_log=False, log_level="warning"
        )
        server = _QuietServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        try:
            yield cls(url=f"http://127.0.0.1:{port}", settings=settings, app=app)
        finally:
            server.should_exit = True
            await task


@dataclass
class Sender:
    """An account with a full-access key and a verified domain."""

    account_id: str
    account_name: str
    key: str
    domain: Domain

    @property
    def headers(self) -> dict[str, str]:
        """Authorization header for this sender's key."""
        return {"Authorization": f"Bearer {self.key}"}

    def address(self, local: str = "noreply") -> str:
        """An address at the sending domain."""
        return f"{local}@{self.domain.name}"


async def make_sender(
    db: Database, dns_server: FakeDNS, settings: Settings, *, account: str, domain: str
) -> Sender:
    """Create account, key and domain; publish the DKIM key in DNS and verify it."""
    async with db.session() as session:
        owner = await accounts.get_or_create_account(session, name=account)
        issued = await accounts.create_key(session, account=owner, name="test", scopes=None)
        added = await domains.add_domain(
            session, account=owner, name=domain, secret_key=settings.secret_key_bytes()
        )
        dns_server.add_txt(domains.dkim_record_name(added), added.dkim_public_record)
        resolver = make_resolver(settings.dns_nameservers, timeout=2)
        ok, detail = await domains.verify_domain(session, resolver=resolver, domain=added)
        assert ok, detail
        await session.commit()
    return Sender(owner.id, owner.name, issued.plaintext, added)


async def make_key(db: Database, *, account: str, scopes: list[str] | None) -> str:
    """A key for `account` (created if new) with the given scopes."""
    async with db.session() as session:
        owner = await accounts.get_or_create_account(session, name=account)
        issued = await accounts.create_key(session, account=owner, name="scoped", scopes=scopes)
        await session.commit()
    return issued.plaintext


async def run_worker(settings: Settings, redis_url: str, **overrides: Any) -> int:
    """An arq burst worker in this process: runs every queued job, then returns."""
    worker = build_worker(
        settings, redis_url, burst=True, handle_signals=False, poll_delay=0.01, **overrides
    )
    try:
        await worker.main()
        await worker.ctx["runtime"].drain()  # jobs only wake the pump: wait for its work
    finally:
        await worker.close()
    return int(worker.jobs_complete + worker.jobs_failed)


def _dkim_lookup(dns_server: FakeDNS) -> Any:
    """dkimpy's dnsfunc, asking the test DNS server over the network."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns_server.host]
        resolver.port = dns_server.port
        resolver.lifetime = timeout
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    return lookup


async def verify_dkim(message: bytes, dns_server: FakeDNS, index: int = 0) -> bool:
    """dkimpy's verdict on a received message's `index`-th signature, with the key from the
    test DNS server. dkimpy resolves synchronously, so it runs in a thread while the loop
    serves DNS."""
    lookup = _dkim_lookup(dns_server)

    def verify() -> bool:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=lookup))

    return await asyncio.to_thread(verify)


PERL_VERIFY = r"""
use strict;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;
my ($host, $port) = @ARGV;
my $resolver = Net::DNS::Resolver->new(nameservers => [$host], port => $port, recurse => 0);
Mail::DKIM::DNS::resolver($resolver);
my $dkim = Mail::DKIM::Verifier->new();
local $/;
my $message = <STDIN>;
$message =~ s/\r?\n/\r\n/g;
$dkim->PRINT($message);
$dkim->CLOSE();
foreach my $signature ($dkim->signatures) {
    print $signature->algorithm, " ", $signature->result, "\n";
}
"""


async def verify_dkim_with_perl(message: bytes, dns_server: FakeDNS) -> list[str]:
    """Each signature's algorithm and verdict according to Perl's Mail::DKIM, an independent
    implementation (Debian libmail-dkim-perl), resolving keys from the test DNS server."""
    process = await asyncio.create_subprocess_exec(
        "perl",
        "-e",
        PERL_VERIFY,
        dns_server.host,
        str(dns_server.port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(message)
    assert process.returncode == 0, err.decode()
    return out.decode().split("\n")[:-1]


@contextlib.contextmanager
def api_in_thread(settings: Settings) -> Iterator[str]:
    """Serve the API from a thread with its own event loop, for synchronous clients (such as
    schemathesis) that would block the test's loop; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, access_log=False, log_level="warning"
    )
    server = _QuietServer(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def run_job(settings: Settings, job: Callable[[dict[str, Any]], Awaitable[int]]) -> int:
    """Run one worker job (a cron's function) once, with a worker runtime of its own."""
    runtime = Runtime(settings)
    try:
        return await job({"runtime": runtime})
    finally:
        await runtime.close()


@contextlib.contextmanager
def statements_run(db: Database) -> Iterator[list[str]]:
    """The SQL of every statement run through `db`'s engine meanwhile, in order."""
    run: list[str] = []

    def seen(_connection: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        run.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        yield run
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
