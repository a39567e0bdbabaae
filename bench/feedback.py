"""Feedback benchmarks: how fast the webhook dispatcher delivers, how fast stats answer.

    python -m bench.feedback [--events 20000] [--recipients 1000000] [--postgres URL]

1. Webhooks. N events are recorded through `events.record()` (which writes the outbox and the
   counters with them), then the dispatcher delivers them to a receiver in another process on
   loopback: one endpoint (batches of 100, one in flight, as in production) and ten endpoints.
   Baseline, same run: the same number of signed 100-event POSTs sent back to back with httpx
   to the same receiver, i.e. the ceiling of one sender doing nothing else. The statements
   the dispatcher sends per batch (its bookkeeping) are counted on the one-endpoint run.
2. Stats. Counters for 1,000,000 recipients over 30 days (processed, delivered, some deferred
   and bounced, 10 categories, every counter shard in use as concurrent writers leave them
   (8 on PostgreSQL, 1 on SQLite, which has a single writer), plus four other
   accounts) are written through the counters' upsert, and the shards of those (past) hours are
   folded as the worker's compact_stats job does; then `GET /v1/stats` for 30 days of hourly
   buckets is timed in the service and over HTTP. Baseline, same run: `GET /healthz`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from app.accounts import service as accounts
from app.core import clock, migrate
from app.core.config import Settings
from app.core.db import Database, sqlite_path
from app.dev.embedded_redis import stop_embedded_redis
from app.events import service as events
from app.stats import compaction, counters
from app.stats.models import ALL_CATEGORIES
from app.stats.service import Granularity, series
from app.webhooks import ledger, payloads
from app.webhooks import service as webhooks
from app.webhooks.dispatcher import build_dispatcher
from app.webhooks.schemas import WebhookCreate
from app.webhooks.signing import signature_headers
from tests.fakes.mx import free_port
from tests.support import ApiServer, create_test_database, drop_test_database

ROOT = Path(__file__).resolve().parent.parent
BATCH = 100


@contextlib.asynccontextmanager
async def bench_settings(postgres: str | None) -> AsyncIterator[Settings]:
    """A migrated scratch database (SQLite in a temp dir, or a new PostgreSQL database)."""
    with tempfile.TemporaryDirectory(prefix="columba-bench-") as tmp:
        if postgres:
            url = await create_test_database(postgres, "columba_bench_" + secrets.token_hex(4))
        else:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
        try:
            yield Settings(
                database_url=url,
                secret_key="bench-secret-" + "b" * 40,
                hostname="bench.columba.test",
                allow_private_destinations=True,
                var_dir=Path(tmp),
            )
        finally:
            if postgres:
                await drop_test_database(postgres, url)


@contextlib.contextmanager
def receiver_process() -> Iterator[str]:
    """The receiver in its own process; yields its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.receiver", str(port)], cwd=ROOT)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def record_events(db: Database, account_id: str, count: int) -> float:
    """Record `count` events in transactions of 1,000; returns events per second."""
    began = time.perf_counter()
    for start in range(0, count, 1000):
        batch = [
            events.NewEvent(
                account_id=account_id,
                type="delivered",
                data={"email": f"user{i}@example.com", "response": "250 2.0.0 OK", "tls": True},
            )
            for i in range(start, min(count, start + 1000))
        ]
        async with db.session() as session:
            await events.record(session, batch)
            await session.commit()
    return count / (time.perf_counter() - began)


async def dispatch_all(settings: Settings, db: Database, expected: int) -> float:
    """Run the dispatcher until `expected` events were delivered; events per second."""
    dispatcher = build_dispatcher(settings, db)
    delivered, began = 0, time.perf_counter()
    try:
        while delivered < expected:
            sent = await dispatcher.run(budget=60)
            if sent == 0:
                raise RuntimeError(f"the dispatcher stalled after {delivered} events")
            delivered += sent
    finally:
        await dispatcher.client.close()
    return delivered / (time.perf_counter() - began)


async def raw_posts(url: str, batches: int) -> float:
    """Baseline: signed 100-event POSTs back to back with httpx; events per second."""
    now = datetime.now(UTC)
    contexts = [
        payloads.EventContext(
            id=i, type="delivered", created_at=now, data={"email": f"user{i}@example.com"}
        )
        for i in range(BATCH)
    ]
    secret = "whsec_" + "A" * 43 + "="
    async with httpx.AsyncClient(timeout=10) as http:
        began = time.perf_counter()
        for number in range(batches):
            body = payloads.standard_body(contexts, timestamp=now)
            headers = signature_headers(
                [secret], message_id=f"msg_{number}", timestamp=now, body=body
            )
            response = await http.post(url, content=body.encode(), headers=headers)
            response.raise_for_status()
        return batches * BATCH / (time.perf_counter() - began)


@contextlib.contextmanager
def counted_statements(db: Database) -> Iterator[list[str]]:
    """The statements sent through the engine while the block runs."""
    sent: list[str] = []

    def count(*args: Any) -> None:
        """Keep the statement's first word."""
        sent.append(args[2].split(None, 1)[0])

    engines = [db.engine.sync_engine]
    path = sqlite_path(db.settings.database_url)
    if path is not None:  # the dispatcher's bookkeeping has an engine of its own there
        engines.append(ledger.sqlite_engine(str(path), db.settings.sqlite_synchronous))
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)


async def measure_webhooks(
    settings: Settings, db: Database, count: int, *, fan_out: bool = True
) -> dict[str, float]:
    """Dispatcher rates against the raw POST ceiling, measured in one run (events/s), and
    the statements the dispatcher sent per 100-event batch."""
    with receiver_process() as url:
        async with db.session() as session:
            one = await accounts.get_or_create_account(session, name="hooks-one")
            many = await accounts.get_or_create_account(session, name="hooks-many")
            await webhooks.create(
                session,
                account_id=one.id,
                request=WebhookCreate(url=url),
                secret_key=settings.secret_key_bytes(),
            )
            for _ in range(10 if fan_out else 0):
                await webhooks.create(
                    session,
                    account_id=many.id,
                    request=WebhookCreate(url=url),
                    secret_key=settings.secret_key_bytes(),
                )
            await session.commit()
        await raw_posts(url, 5)  # warm-up
        figures = {"recorded": await record_events(db, one.id, count)}
        # Shared machines are noisy: the baseline is measured right before and right after
        # each dispatcher run, and the ratio taken against the mean of the two.
        figures["before"] = await raw_posts(url, count // BATCH)
        with counted_statements(db) as statements:
            figures["single"] = await dispatch_all(settings, db, count)
        figures["statements_per_batch"] = len(statements) * BATCH / count
        figures["between"] = await raw_posts(url, count // BATCH)
        if fan_out:
            per_endpoint = count // 10
            await record_events(db, many.id, per_endpoint)  # after: the first run would take them
            figures["fanned"] = await dispatch_all(settings, db, per_endpoint * 10)
            figures["after"] = await raw_posts(url, count // BATCH)
    return figures


async def webhook_bench(settings: Settings, db: Database, count: int) -> None:
    """Dispatcher rate against the raw POST ceiling, measured in one run; printed."""
    figures = await measure_webhooks(settings, db, count)
    before, between, after = figures["before"], figures["between"], figures["after"]
    print(f"Webhooks ({count} events, {_store(settings)}):")
    print(f"  record() with outbox and counters     {figures['recorded']:9.0f} events/s")
    print(
        f"  baseline: raw signed POSTs (httpx)    {before:9.0f} / {between:.0f} / {after:.0f}"
        " events/s (before / between / after)"
    )
    print(f"  statements per 100-event batch         {figures['statements_per_batch']:9.1f}")
    for name, rate, baseline in (
        ("1 endpoint  ", figures["single"], (before + between) / 2),
        ("10 endpoints", figures["fanned"], (between + after) / 2),
    ):
        ratio = rate / baseline
        print(f"  dispatcher, {name}              {rate:9.0f} events/s  ({ratio:.2f}x baseline)")


def _store(settings: Settings) -> str:
    """Which database the figures come from."""
    return "SQLite" if settings.is_sqlite else "PostgreSQL"


async def fill_counters(db: Database, account_id: str, recipients: int, start: datetime) -> None:
    """Counters as `recipients` recipients over 720 hours leave them (all shards in use)."""
    rng = random.Random(7)
    categories = [f"category-{n}" for n in range(10)]
    per_hour = recipients // 720
    shards = counters.shard_count(db.engine.dialect.name)
    for hour in range(720):
        at = start + timedelta(hours=hour)
        async with db.session() as session:
            for shard in range(shards):
                totals: dict[counters.Key, Counter[str]] = {}
                share = per_hour // shards
                for category in (ALL_CATEGORIES, *categories):
                    n = share if category == ALL_CATEGORIES else share // len(categories)
                    totals[(account_id, category, at)] = Counter(
                        requests=n,
                        processed=n,
                        delivered=n - n // 20,
                        deferred=rng.randrange(n // 10 + 1),
                        bounces=n // 40,
                        blocks=n // 100,
                        opens=n // 3,
                        unique_opens=n // 4,
                    )
                session.info["stats_shard"] = shard
                await counters.add(session, totals)
            await session.commit()


async def vacuum(db: Database) -> None:
    """What autovacuum does after a large delete: reclaim dead rows and refresh statistics."""
    statement = "VACUUM ANALYZE stats_counters" if not db.settings.is_sqlite else "ANALYZE"
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.exec_driver_sql(statement)


def _timings(samples: list[float]) -> str:
    """Median and 95th percentile in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(samples) * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"


async def timed(action: Callable[[], Awaitable[object]], runs: int = 50) -> list[float]:
    """Seconds per call over `runs` calls, after two warm-ups."""
    for _ in range(2):
        await action()
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        await action()
        samples.append(time.perf_counter() - began)
    return samples


async def stats_bench(settings: Settings, db: Database, recipients: int) -> None:
    """30 days of hourly buckets: the service query and GET /v1/stats, against GET /healthz."""
    end = clock.now().replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=30)
    async with db.session() as session:
        account = await accounts.get_or_create_account(session, name="dashboard")
        others = [await accounts.get_or_create_account(session, name=f"other{n}") for n in range(4)]
        key = await accounts.create_key(session, account=account, name="bench", scopes=None)
        await session.commit()
    began = time.perf_counter()
    await fill_counters(db, account.id, recipients, start)
    for other in others:
        await fill_counters(db, other.id, recipients // 4, start)
    filled = time.perf_counter() - began

    async def query(granularity: Granularity, category: str = ALL_CATEGORIES) -> object:
        """The stats service call being timed."""
        async with db.session() as session:
            return await series(
                session,
                account_id=account.id,
                start=start,
                end=end,
                granularity=granularity,
                categories=(category,),
            )

    unfolded = await timed(lambda: query(Granularity.HOUR))
    began = time.perf_counter()
    while True:  # what the worker's compact_stats job does for hours that are over
        async with db.session() as session:
            folded = await compaction.compact(session, before=end)
            await session.commit()
        if not folded:
            break
    compacted = time.perf_counter() - began
    await vacuum(db)
    hourly = await timed(lambda: query(Granularity.HOUR))
    daily = await timed(lambda: query(Granularity.DAY))
    category = await timed(lambda: query(Granularity.HOUR, "category-3"))
    params = {"start": start.isoformat(), "end": end.isoformat(), "granularity": "hour"}
    headers = {"Authorization": f"Bearer {key.plaintext}"}
    async with ApiServer.running(settings) as api, httpx.AsyncClient(base_url=api.url) as http:
        over_http = await timed(lambda: http.get("/v1/stats", params=params, headers=headers))
        health = await timed(lambda: http.get("/healthz"))
        body = (await http.get("/v1/stats", params=params, headers=headers)).json()
    stop_embedded_redis()  # the API server's embedded Redis (this bench has no other)
    assert len(body["stats"]) == 720, len(body["stats"])
    http_median, health_median = statistics.median(over_http), statistics.median(health)
    print(f"Stats (30 days of hourly buckets, {recipients:,} recipients, {_store(settings)};")
    print(f"       counters written in {filled:.1f} s):")
    print(f"  service query, hourly, shards unfolded {_timings(unfolded)}")
    print(f"  (folding the shards of past hours took {compacted:.1f} s)")
    print(f"  service query, hourly, all mail       {_timings(hourly)}   goal <= 20 ms")
    print(f"  service query, hourly, one category   {_timings(category)}")
    print(f"  service query, daily, all mail        {_timings(daily)}")
    print(f"  GET /v1/stats (720 buckets, HTTP)     {_timings(over_http)}")
    print(f"  baseline: GET /healthz (HTTP)         {_timings(health)}")
    print(f"  GET /v1/stats costs {http_median / health_median:.1f}x a bare endpoint")


async def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="SQLAlchemy URL of a PostgreSQL server to use")
    parser.add_argument("--only", choices=("webhooks", "stats"))
    args = parser.parse_args()
    async with bench_settings(args.postgres) as settings:
        db = Database(settings)
        try:
            if args.only in (None, "webhooks"):
                await webhook_bench(settings, db, args.events)
            if args.only in (None, "stats"):
                await stats_bench(settings, db, args.recipients)
        finally:
            await db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
