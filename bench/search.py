"""Activity search over a seeded database: p50 and p99 per filter, on PostgreSQL and SQLite.

Seeds `--recipients` recipients (default 1,000,000) over about half as many messages, written
straight into the tables (asyncpg COPY on PostgreSQL, sqlite3 executemany in one transaction
on SQLite; not through the API), shaped like a transactional sender's history: 30 days, a few
senders and subjects, categories and custom_args on some messages, a tenth of the rows in a
second account, addresses spread over 200,000 people at 1,000 domains (one holding a third).
Then every filter of `GET /v1/messages` (and a `/v3/messages` query) runs `--runs` times with
varying values through app.messages.search.search(), the function the API calls; the figure
is its wall time (the query and loading the page of 50 messages).

    python -m bench.search [--postgres URL] [--sqlite PATH] [--recipients N] [--runs 200]
        [--databases postgres,sqlite] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from app.accounts import service as accounts
from app.core import ids, migrate
from app.core.config import Settings
from app.core.db import Database
from app.domains import service as domains
from app.messages import activity, activity_query, search
from app.messages.models import RecipientStatus
from app.messages.search import SearchFilters, tags_of
from tests.support import create_test_database, drop_test_database

DAYS = 30
PEOPLE = 200_000
DOMAINS = 1_000
SENDERS = [f"{name}@shop.test" for name in ("orders", "noreply", "billing", "support")]
SUBJECTS = [
    "Your order #{n} has shipped",
    "Password reset",
    "Welcome to Shop",
    "Invoice {n}",
    "Your receipt",
    "Verify your email address",
    "Delivery update for order #{n}",
    "Weekly summary",
]
CATEGORIES = ["shipping", "billing", "account", "marketing", "receipts", "alerts"]
STATUSES = ["delivered"] * 90 + ["bounced"] * 4 + ["deferred"] * 3 + ["dropped"] * 2 + ["queued"]
TEMPLATES = [f"d-{index:032x}" for index in range(5)]
BATCHES = [f"batch{index:03d}" for index in range(100)]


@dataclass
class Seeded:
    """The accounts and some values that exist, to search for."""

    account_id: str
    other_account_id: str
    addresses: list[str]
    user_ids: list[str]
    start: datetime


def _address(rng: random.Random) -> str:
    person = rng.randrange(PEOPLE)
    domain = "gmail.test" if rng.random() < 0.33 else f"d{person % DOMAINS}.test"
    return f"user{person}@{domain}"


def _rows(
    rng: random.Random,
    account_ids: tuple[str, str],
    domain_ids: tuple[str, str],
    count: int,
    start: datetime,
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], list[str]]]:
    """(message, its recipients, its tags) until `count` recipients are made, oldest first."""
    made, index = 0, 0
    step = timedelta(days=DAYS) / (count / 2)
    moment = start
    while made < count:
        index += 1
        moment += step
        other = rng.random() < 0.1
        account_id, domain_id = account_ids[other], domain_ids[other]
        millis = int(moment.timestamp() * 1000)
        message_id = ids.encode((millis << 80) | rng.getrandbits(80))
        categories = [rng.choice(CATEGORIES)] if rng.random() < 0.3 else []
        args = {"user_id": str(rng.randrange(100_000))} if rng.random() < 0.5 else {}
        message = {
            "id": message_id,
            "account_id": account_id,
            "domain_id": domain_id,
            "from_email": rng.choice(SENDERS) if rng.random() > 0.001 else "rare@shop.test",
            "subject": rng.choice(SUBJECTS).format(n=index),
            "categories": categories,
            "custom_args": args,
            "message_id_header": f"<{message_id.lower()}@bench.test>",
            "created_at": moment,
            "template_id": rng.choice(TEMPLATES) if rng.random() < 0.2 else None,
            "batch_id": rng.choice(BATCHES) if rng.random() < 0.01 else None,
        }
        recipients = []
        for _ in range(1 + index % 3):
            email = _address(rng)
            recipients.append(
                {
                    "id": ids.encode((millis << 80) | rng.getrandbits(80)),
                    "message_id": message_id,
                    "account_id": account_id,
                    "email": email,
                    "domain": email.rpartition("@")[2],
                    "status": rng.choice(STATUSES),
                    "created_at": moment,
                }
            )
        made += len(recipients)
        yield message, recipients, sorted(tags_of(categories, [args]))


MESSAGE_COLUMNS = [
    "id", "account_id", "domain_id", "from_email", "to_header", "cc_header", "reply_to",
    "subject", "headers", "categories", "custom_args", "message_id_header", "size",
    "created_at", "template_id", "sections", "batch_id", "settings",
]  # fmt: skip
RECIPIENT_COLUMNS = [
    "id", "message_id", "account_id", "email", "domain", "kind", "status", "attempt_count",
    "lease_expiries", "created_at", "updated_at",
]  # fmt: skip
TAG_COLUMNS = ["message_id", "tag", "account_id"]


def _message_tuple(message: dict[str, Any], when: Any) -> tuple[Any, ...]:
    return (
        message["id"], message["account_id"], message["domain_id"], message["from_email"],
        "[]", "[]", "[]", message["subject"], "[]", json.dumps(message["categories"]),
        json.dumps(message["custom_args"]), message["message_id_header"], 1000, when,
        message["template_id"], "{}", message["batch_id"], "{}",
    )  # fmt: skip


def _recipient_tuple(recipient: dict[str, Any], when: Any) -> tuple[Any, ...]:
    return (
        recipient["id"], recipient["message_id"], recipient["account_id"], recipient["email"],
        recipient["domain"], "to", recipient["status"], 1, 0, when, when,
    )  # fmt: skip


async def _provision(settings: Settings) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two accounts, each with a sending domain: (account ids, domain ids)."""
    database = Database(settings)
    try:
        async with database.session() as session:
            made = []
            for name in ("bench", "other"):
                account = await accounts.get_or_create_account(session, name=name)
                domain = await domains.add_domain(
                    session, account=account, name=f"{name}.test",
                    secret_key=settings.secret_key_bytes(),
                )  # fmt: skip
                made.append((account.id, domain.id))
            await session.commit()
    finally:
        await database.dispose()
    return (made[0][0], made[1][0]), (made[0][1], made[1][1])


def _collect(rng: random.Random, account_ids: tuple[str, str], seeded: Seeded, row: Any) -> None:
    """Keep some searchable values of the main account."""
    message, recipients, _ = row
    if message["account_id"] != account_ids[0] or rng.random() > 0.01:
        return
    seeded.addresses.append(recipients[0]["email"])
    if message["custom_args"]:
        seeded.user_ids.append(message["custom_args"]["user_id"])


async def seed_postgres(url: str, settings: Settings, count: int) -> Seeded:
    """Seed with COPY (asyncpg), then ANALYZE."""
    account_ids, domain_ids = await _provision(settings)
    rng, start = random.Random(15), datetime.now(UTC) - timedelta(days=DAYS)
    seeded = Seeded(account_ids[0], account_ids[1], [], [], start)
    messages, recipients, tags = [], [], []
    for row in _rows(rng, account_ids, domain_ids, count, start):
        _collect(rng, account_ids, seeded, row)
        message, its_recipients, its_tags = row
        messages.append(_message_tuple(message, message["created_at"]))
        recipients += [_recipient_tuple(r, r["created_at"]) for r in its_recipients]
        tags += [(message["id"], tag, message["account_id"]) for tag in its_tags]
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table(
            "messages", records=messages, columns=MESSAGE_COLUMNS
        )
        await connection.copy_records_to_table(
            "recipients", records=recipients, columns=RECIPIENT_COLUMNS
        )
        await connection.copy_records_to_table("message_tags", records=tags, columns=TAG_COLUMNS)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return seeded


def _sqlite_time(moment: datetime) -> str:
    """The form SQLAlchemy stores a UTC time in on SQLite."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


async def seed_sqlite(path: Path, settings: Settings, count: int) -> Seeded:
    """Seed with sqlite3's executemany in one transaction."""
    account_ids, domain_ids = await _provision(settings)
    rng, start = random.Random(15), datetime.now(UTC) - timedelta(days=DAYS)
    seeded = Seeded(account_ids[0], account_ids[1], [], [], start)
    connection = sqlite3.connect(path)
    try:
        marks = {n: ", ".join("?" * n) for n in (3, len(MESSAGE_COLUMNS), len(RECIPIENT_COLUMNS))}
        with connection:
            messages, recipients, tags = [], [], []
            for row in _rows(rng, account_ids, domain_ids, count, start):
                _collect(rng, account_ids, seeded, row)
                message, its_recipients, its_tags = row
                when = _sqlite_time(message["created_at"])
                messages.append(_message_tuple(message, when))
                recipients += [_recipient_tuple(r, when) for r in its_recipients]
                tags += [(message["id"], tag, message["account_id"]) for tag in its_tags]
            connection.executemany(
                f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
                f"VALUES ({marks[len(MESSAGE_COLUMNS)]})",
                messages,
            )
            connection.executemany(
                f"INSERT INTO recipients ({', '.join(RECIPIENT_COLUMNS)}) "
                f"VALUES ({marks[len(RECIPIENT_COLUMNS)]})",
                recipients,
            )
            connection.executemany(
                f"INSERT INTO message_tags ({', '.join(TAG_COLUMNS)}) VALUES ({marks[3]})", tags
            )
        connection.execute("ANALYZE")
    finally:
        connection.close()
    return seeded


Case = Callable[[random.Random, Seeded], SearchFilters]
DAY = timedelta(days=1)
F, ST = SearchFilters, RecipientStatus
CASES: dict[str, Case] = {
    "no filter (newest 50)": lambda rng, s: F(),
    "recipient (exact address)": lambda rng, s: F(recipient=rng.choice(s.addresses).upper()),
    "recipient (address never sent to)": lambda rng, s: F(recipient=f"no{rng.random()}@x.test"),
    "recipient @domain (small)": lambda rng, s: F(recipient=f"@d{rng.randrange(DOMAINS)}.test"),
    "recipient @domain (a third of all)": lambda rng, s: F(recipient="@gmail.test"),
    "from (common)": lambda rng, s: F(sender=rng.choice(SENDERS)),
    "from (rare, 0.1%)": lambda rng, s: F(sender="rare@shop.test"),
    "subject prefix (one message)": lambda rng, s: F(subject=f"invoice {rng.randrange(400_000)}"),
    "subject prefix (an eighth of all)": lambda rng, s: F(subject="password r"),
    "status=delivered (90%)": lambda rng, s: F(statuses=(ST.DELIVERED,)),
    "status=bounced (4%)": lambda rng, s: F(statuses=(ST.BOUNCED,)),
    "status=queued (1%)": lambda rng, s: F(statuses=(ST.QUEUED,)),
    "category": lambda rng, s: F(category=rng.choice(CATEGORIES)),
    "metadata.user_id": lambda rng, s: F(metadata=(("user_id", rng.choice(s.user_ids)),)),
    "template_id": lambda rng, s: F(template_id=rng.choice(TEMPLATES)),
    "batch_id": lambda rng, s: F(batch_id=rng.choice(BATCHES)),
    "start/end (one day)": lambda rng, s: _day(rng, s),
    "recipient + status": lambda rng, s: F(
        recipient=rng.choice(s.addresses), statuses=(ST.DELIVERED,)
    ),
    "@domain (small) + status=bounced": lambda rng, s: F(
        recipient=f"@d{rng.randrange(DOMAINS)}.test", statuses=(ST.BOUNCED,)
    ),
    "category + one day": lambda rng, s: replace(_day(rng, s), category=rng.choice(CATEGORIES)),
    "status=bounced + from (common)": lambda rng, s: F(
        sender=rng.choice(SENDERS), statuses=(ST.BOUNCED,)
    ),
}


def _day(rng: random.Random, seeded: Seeded) -> SearchFilters:
    """One day of the seeded month."""
    start = seeded.start + DAY * rng.randrange(DAYS)
    return SearchFilters(start=start, end=start + DAY)


V3_QUERIES: dict[str, Callable[[random.Random, Seeded], str]] = {
    '/v3 to_email="…"': lambda rng, s: f'to_email="{rng.choice(s.addresses)}"',
    '/v3 status="not_delivered"': lambda rng, s: 'status="not_delivered"',
    "/v3 last_event_time BETWEEN": lambda rng, s: (
        'last_event_time BETWEEN TIMESTAMP "{}" AND TIMESTAMP "{}"'.format(
            *(moment.isoformat() for moment in _bounds(_day(rng, s)))
        )
    ),
}


def _bounds(filters: SearchFilters) -> tuple[datetime, datetime]:
    assert filters.start is not None
    assert filters.end is not None
    return filters.start, filters.end


async def _timed(run: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    """Milliseconds per run after a few warm-up runs."""
    for _ in range(min(5, runs)):
        await run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def measure(settings: Settings, seeded: Seeded, runs: int, label: str) -> dict[str, Any]:
    """p50/p99 per case; prints a line per case."""
    database = Database(settings)
    results: dict[str, Any] = {}
    try:
        for name, case in CASES.items():
            rng = random.Random(name)

            async def one(case: Case = case, rng: random.Random = rng) -> object:
                async with database.session() as session:
                    return await search.search(
                        session, seeded.account_id, case(rng, seeded), None, 50
                    )

            results[name] = _report(label, name, await _timed(one, runs))
        cursor_page = await _second_page(database, seeded)
        results["page 2 (cursor)"] = _report(
            label, "page 2 (cursor)", await _timed(cursor_page, runs)
        )
        for name, query in V3_QUERIES.items():
            rng = random.Random(name)

            async def v3(query: Callable[..., str] = query, rng: random.Random = rng) -> object:
                async with database.session() as session:
                    alternatives = activity_query.to_filters(query(rng, seeded))
                    return await activity.list_activity(
                        session, seeded.account_id, alternatives, 50
                    )

            results[name] = _report(label, name, await _timed(v3, runs))
    finally:
        await database.dispose()
    return results


async def _second_page(database: Database, seeded: Seeded) -> Callable[[], Awaitable[object]]:
    """A search for the page after the first of a common filter."""
    filters = SearchFilters(statuses=(RecipientStatus.DELIVERED,))
    async with database.session() as session:
        first = await search.search(session, seeded.account_id, filters, None, 50)

    async def run() -> object:
        async with database.session() as session:
            return await search.search(session, seeded.account_id, filters, first.next_cursor, 50)

    return run


def _report(label: str, name: str, times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{label:10} {name:40} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms", flush=True)
    return {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}


def _settings(url: str) -> Settings:
    return Settings(database_url=url, secret_key="bench-secret-" + "b" * 40, db_pool_size=2)


async def run_postgres(args: argparse.Namespace) -> dict[str, Any]:
    """Seed a database of its own on the server, measure, drop it (unless --keep)."""
    url = await create_test_database(args.postgres, "columba_search_" + secrets.token_hex(4))
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        started = time.perf_counter()
        seeded = await seed_postgres(url, _settings(url), args.recipients)
        took = time.perf_counter() - started
        print(f"postgres: seeded {args.recipients:,} recipients in {took:.0f} s")
        return await measure(_settings(url), seeded, args.runs, "postgres")
    finally:
        if not args.keep:
            await drop_test_database(args.postgres, url)


async def run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    """Seed a fresh SQLite file, measure, delete it (unless --keep)."""
    path = Path(args.sqlite)
    for stale in (path, *(path.with_name(path.name + side) for side in ("-wal", "-shm"))):
        stale.unlink(missing_ok=True)
    url = f"sqlite+aiosqlite:///{path}"
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        started = time.perf_counter()
        seeded = await seed_sqlite(path, _settings(url), args.recipients)
        took = time.perf_counter() - started
        print(f"sqlite: seeded {args.recipients:,} recipients in {took:.0f} s")
        return await measure(_settings(url), seeded, args.runs, "sqlite")
    finally:
        if not args.keep:
            await asyncio.to_thread(path.unlink, missing_ok=True)


async def main(args: argparse.Namespace) -> None:
    """Each database in turn; the figures also go to bench/results/search-<time>.json."""
    results = {}
    for name in args.databases.split(","):
        results[name] = await (run_postgres(args) if name == "postgres" else run_sqlite(args))
    out = Path("bench/results") / f"search-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"recipients": args.recipients, "results": results}, indent=2))
    print(f"written to {out}")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--sqlite", default="var/bench-search.db")
    parser.add_argument("--databases", default="postgres,sqlite")
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the seeded databases")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
