"""Dashboard page times over a seeded database (1,000,000 recipients), on PostgreSQL and SQLite.

Seeds as bench/search.py does (its seeders), then adds what the pages read beyond messages
and recipients: one delivered attempt and processed/delivered events per delivered
recipient, an hourly stats row per account for the 30 days, and a suppression per bounced
recipient. Each page is then requested `--runs` times in process through the ASGI app with a
signed-in session (httpx.ASGITransport): the figure is the server's time for the page, the
queries and the template, without a network in between.

    python -m bench.dashboard [--postgres URL] [--sqlite PATH] [--recipients N] [--runs 50]
        [--databases postgres,sqlite] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text

from app.accounts import service as accounts
from app.accounts.models import Account
from app.core import migrate
from app.core.config import Settings
from app.core.db import Database
from app.dashboard import sessions
from app.main import create_app
from app.messages.models import Message
from app.stats.models import ALL_CATEGORIES, METRICS
from bench.search import Seeded, seed_postgres, seed_sqlite
from tests.support import create_test_database, drop_test_database

EXTRA_ROWS = [
    # One delivered attempt per delivered recipient (the latency query and timelines read them).
    """INSERT INTO attempts (recipient_id, message_id, account_id, started_at, duration_ms,
        outcome, mx_host, ip, stage, code, enhanced_code, response)
       SELECT id, message_id, account_id, created_at, 180, 'delivered', 'mx1.gmail.test',
        '192.0.2.1', 'data', 250, '2.0.0', '250 2.0.0 OK'
       FROM recipients WHERE status = 'delivered'""",
    """INSERT INTO events (account_id, message_id, recipient_id, type, created_at, data)
       SELECT account_id, message_id, id, 'processed', created_at, '{}' FROM recipients""",
    """INSERT INTO events (account_id, message_id, recipient_id, type, created_at, data)
       SELECT account_id, message_id, id, 'delivered', created_at, '{}' FROM recipients
       WHERE status = 'delivered'""",
    """INSERT INTO suppressions (id, account_id, email, type, reason, status, created_at)
       SELECT min(id), account_id, lower(email), 'bounce', '550 5.1.1 no such user', '5.1.1',
        min(created_at) FROM recipients WHERE status = 'bounced'
       GROUP BY account_id, lower(email)""",
]


async def seed_extra(database: Database, seeded: Seeded) -> None:
    """Attempts, events and suppressions from the recipients; hourly stats rows."""
    async with database.session() as session:
        for statement in EXTRA_ROWS:
            await session.execute(text(statement))
        rng = random.Random(15)
        hour = seeded.start.replace(minute=0, second=0, microsecond=0)
        rows = []
        while hour < datetime.now(UTC):
            for account_id in (seeded.account_id, seeded.other_account_id):
                counts = {metric: rng.randrange(0, 2000) for metric in METRICS}
                rows.append(
                    {"account_id": account_id, "category": ALL_CATEGORIES, "hour": hour,
                     "shard": 0, "updated_at": hour, **counts}
                )  # fmt: skip
            hour += timedelta(hours=1)
        columns = ["account_id", "category", "hour", "shard", "updated_at", *METRICS]
        await session.execute(
            text(
                f"INSERT INTO stats_counters ({', '.join(columns)}) "
                f"VALUES ({', '.join(':' + c for c in columns)})"
            ),
            rows,
        )
        await session.commit()
    # What autovacuum would have done by the time anyone looks: planner statistics for the
    # new rows, and (PostgreSQL) the visibility map that index-only scans rely on.
    async with database.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        dialect = connection.dialect.name
        await autocommit.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))


async def _session_cookie(database: Database, settings: Settings, account_id: str) -> str:
    """A signed-in dashboard session of a full-access key of the account."""
    async with database.session() as session:
        account = await session.get(Account, account_id)
        assert account is not None
        issued = await accounts.create_key(session, account=account, name="bench", scopes=None)
        await session.commit()
    return sessions.seal(settings.secret_key_bytes(), sessions.new_session(issued.api_key.id))


async def _pages(database: Database, seeded: Seeded) -> dict[str, str]:
    """The pages to time, with real ids and addresses of the seeded account."""
    async with database.session() as session:
        message_id = await session.scalar(
            select(Message.id).where(Message.account_id == seeded.account_id)
            .order_by(Message.id.desc()).offset(1000).limit(1)
        )  # fmt: skip
    address = seeded.addresses[0]
    return {
        "overview 24h": "/dashboard?range=24h",
        "overview 7d": "/dashboard?range=7d",
        "overview 30d": "/dashboard?range=30d",
        "activity (newest 50)": "/dashboard/activity",
        "activity recipient=": f"/dashboard/activity?recipient={address}",
        "activity status=bounced": "/dashboard/activity?status=bounced",
        "message timeline": f"/dashboard/messages/{message_id}",
        "suppressions (newest 100)": "/dashboard/suppressions",
        "suppressions search": "/dashboard/suppressions?email=a",
        "domains": "/dashboard/domains",
        "webhooks": "/dashboard/webhooks",
        "API keys": "/dashboard/keys",
    }


async def measure(settings: Settings, seeded: Seeded, runs: int, label: str) -> dict[str, Any]:
    """p50/p99 of each page's server time."""
    database = Database(settings)
    await seed_extra(database, seeded)
    cookie = await _session_cookie(database, settings, seeded.account_id)
    pages = await _pages(database, seeded)
    await database.dispose()
    app = create_app(settings)
    results: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench",
            headers={"Cookie": f"{sessions.SESSION_COOKIE}={cookie}"},
        ) as http:  # fmt: skip
            for name, path in pages.items():
                results[name] = await _timed(http, path, runs, label, name)
    return results


async def _timed(
    http: httpx.AsyncClient, path: str, runs: int, label: str, name: str
) -> dict[str, float]:
    """Warm up once, then time `runs` requests."""
    first = await http.get(path)
    assert first.status_code == 200, (path, first.status_code, first.text[:500])
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        answer = await http.get(path)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200
    times.sort()
    p50, p99 = statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{label:10} {name:28} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms", flush=True)
    return {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}


def _settings(url: str, redis: str) -> Settings:
    return Settings(
        database_url=url, redis_url=redis, secret_key="bench-secret-" + "b" * 40, db_pool_size=2
    )


async def run(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Seed one database, measure, drop it."""
    if name == "postgres":
        url = await create_test_database(args.postgres, "columba_dash_" + secrets.token_hex(4))
    else:
        await asyncio.to_thread(Path(args.sqlite).unlink, missing_ok=True)
        url = f"sqlite+aiosqlite:///{args.sqlite}"
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        settings = _settings(url, args.redis)
        started = time.perf_counter()
        if name == "postgres":
            seeded = await seed_postgres(url, settings, args.recipients)
        else:
            seeded = await seed_sqlite(Path(args.sqlite), settings, args.recipients)
        print(f"{name}: seeded {args.recipients:,} in {time.perf_counter() - started:.0f} s")
        return await measure(settings, seeded, args.runs, name)
    finally:
        if name == "postgres":
            await drop_test_database(args.postgres, url)
        else:
            await asyncio.to_thread(Path(args.sqlite).unlink, missing_ok=True)


async def main(args: argparse.Namespace) -> None:
    """Each database in turn; figures also go to bench/results/dashboard-<time>.json."""
    results = {name: await run(args, name) for name in args.databases.split(",")}
    out = Path("bench/results") / f"dashboard-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"recipients": args.recipients, "results": results}, indent=2))
    print(f"written to {out}")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--sqlite", default="var/bench-dashboard.db")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--databases", default="postgres,sqlite")
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
