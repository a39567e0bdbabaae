"""Retention purge of a million rows under load: does anything wait on its locks?

Seeds `--rows` rows (default 1,000,000: a fifth each of old finished messages, their
recipients, attempts, events and search tags) with one INSERT … SELECT per table (generate_series on
PostgreSQL, a recursive CTE on SQLite), starts the API, and runs a load of sends
(`POST /v1/send`) and status reads (`GET /v1/messages/{id}`) in a loop: first alone for
`--baseline` seconds, then while the worker's purge (app.retention.run_batches with the
worker's batch size and pause) deletes everything. The figure that decides is the longest
wait for a lock the purge holds, measured directly rather than guessed from latencies:

- SQLite: a probe thread takes the database's write lock (`BEGIN IMMEDIATE; COMMIT`) every
  10 ms and times how long it waits for it: exactly what a send's commit waits for;
- PostgreSQL: a probe samples pg_stat_activity every 5 ms for backends waiting on a lock
  (`wait_event_type = 'Lock'`) and keeps the longest wait it saw.

The request latencies of both phases are printed beside it (p50, p99, max); they include the
machine's noise, the probe's figure does not. Goal: the longest lock wait during the purge
stays under 100 ms.

    python -m bench.purge [--rows 1000000] [--databases sqlite,postgres] [--postgres URL]
        [--baseline 10] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession

from app.accounts import service as accounts
from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.domains import service as domains
from app.retention import service as retention
from tests.fakes.mx import free_port
from tests.retention.seed import row_counts, seed_finished_mail
from tests.support import _asyncpg_dsn, create_test_database, drop_test_database, migrate_database
from worker import jobs

GOAL_MS = 100.0
ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-purge-secret-key-of-enough-length-0123456789"


@dataclass
class Load:
    """Latencies (ms) of the requests of one phase."""

    sends: list[float] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)
    errors: int = 0

    def summary(self) -> dict[str, Any]:
        """Count, p50, p99 and max of each kind."""
        return {"send": _stats(self.sends), "read": _stats(self.reads), "errors": self.errors}


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(values),
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "max": round(ordered[-1], 1),
    }


async def _sender_loop(
    http: httpx.AsyncClient, key: str, load: Load, stop: asyncio.Event, ids: list[str]
) -> None:
    """Send single-recipient messages back to back."""
    headers = {"Authorization": f"Bearer {key}"}
    number = 0
    while not stop.is_set():
        number += 1
        body = {
            "from": "shop@bench.test",
            "to": [f"p{number}@example.test"],
            "subject": "Hi",
            "text": "Hello.",
        }
        started = time.perf_counter()
        response = await http.post("/v1/send", json=body, headers=headers)
        load.sends.append((time.perf_counter() - started) * 1000)
        if response.status_code != 202:
            load.errors += 1
        else:
            ids.append(response.json()["id"])


async def _reader_loop(
    http: httpx.AsyncClient, key: str, load: Load, stop: asyncio.Event, ids: list[str]
) -> None:
    """Read the status of the latest message sent, back to back."""
    headers = {"Authorization": f"Bearer {key}"}
    while not stop.is_set():
        if not ids:
            await asyncio.sleep(0.01)
            continue
        started = time.perf_counter()
        response = await http.get(f"/v1/messages/{ids[-1]}", headers=headers)
        load.reads.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            load.errors += 1


class SqliteProbe:
    """Times how long taking SQLite's write lock waits, every 10 ms, in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                connection.execute("BEGIN IMMEDIATE")
                self.waits.append((time.perf_counter() - started) * 1000)
                connection.execute("COMMIT")
                time.sleep(0.01)
        finally:
            connection.close()

    async def __aenter__(self) -> SqliteProbe:
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join)


class PostgresProbe:
    """Samples pg_stat_activity every 5 ms for backends waiting on a lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.waits: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(self.url))
        query = (
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0) "
            "FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        try:
            while True:
                self.waits.append(float(await connection.fetchval(query)) * 1000)
                await asyncio.sleep(0.005)
        finally:
            await connection.close()

    async def __aenter__(self) -> PostgresProbe:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _under_load(url: str, key: str, work: Callable[[], Awaitable[Any]]) -> tuple[Load, Any]:
    """Run `work` while two senders and a reader keep the API busy."""
    load, stop, ids = Load(), asyncio.Event(), list[str]()
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        loops = [
            asyncio.create_task(_sender_loop(http, key, load, stop, ids)),
            asyncio.create_task(_sender_loop(http, key, load, stop, ids)),
            asyncio.create_task(_reader_loop(http, key, load, stop, ids)),
        ]
        try:
            result = await work()
        finally:
            stop.set()
            await asyncio.gather(*loops)
    return load, result


def _spawn_api(port: int, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    """Start `columba api` on `port`, its output to `log`."""
    command = [sys.executable, "-m", "app.cli", "--log-level", "WARNING", "api"]
    command += ["--port", str(port)]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def api_process(settings: Settings) -> AsyncIterator[str]:
    """`columba api` in a process of its own (so that it does not share this process's GIL
    with the purge); yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLUMBA_")}
    env |= {
        "COLUMBA_DATABASE_URL": settings.database_url,
        "COLUMBA_SECRET_KEY": SECRET,
        "COLUMBA_HOSTNAME": settings.hostname,
        "COLUMBA_VAR_DIR": str(settings.var_dir),
        "COLUMBA_REQUIRE_VERIFIED_DOMAINS": "false",
        "COLUMBA_RATE_LIMIT": "off",
        "COLUMBA_DB_POOL_SIZE": "4",
        "PYTHONPATH": str(ROOT),
    }
    log = (settings.var_dir / "api.log").open("wb")
    process = _spawn_api(port, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http, asyncio.timeout(60):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url + "/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


async def _provision(settings: Settings) -> tuple[str, str, str]:
    """An account with a key and a sending domain: (account id, domain id, key)."""
    database = Database(settings)
    try:
        async with database.session() as session:
            account = await accounts.get_or_create_account(session, name="bench")
            issued = await accounts.create_key(session, account=account, name="bench", scopes=None)
            domain = await domains.add_domain(
                session, account=account, name="bench.test", secret_key=settings.secret_key_bytes()
            )
            await session.commit()
    finally:
        await database.dispose()
    return account.id, domain.id, issued.plaintext


async def measure(
    settings: Settings, probe: Callable[[], Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Seed, then the baseline phase and the purge phase; the figures of both."""
    await migrate_database(settings.database_url)
    account_id, domain_id, key = await _provision(settings)
    limit = args.limit or jobs.retention_batch(settings)
    database = Database(settings)
    try:
        old = clock.now() - settings.retention - timedelta(days=1)
        started = time.perf_counter()
        await seed_finished_mail(
            database, account_id=account_id, domain_id=domain_id, count=args.rows // 5, created=old
        )
        seeded = time.perf_counter() - started
        print(f"  seeded {args.rows:,} rows in {seeded:.1f} s", flush=True)
        async with api_process(settings) as url:
            async with probe() as base_probe:
                baseline, _ = await _under_load(url, key, lambda: asyncio.sleep(args.baseline))
            base_waits = list(base_probe.waits)
            batch_ms: list[float] = []
            holds = _hold_times()

            async def timed(session: Any, *, before: datetime, limit: int) -> retention.Purged:
                began = time.perf_counter()
                done = await retention.purge_batch(session, before=before, limit=limit)
                batch_ms.append((time.perf_counter() - began) * 1000)
                return done

            async def purge() -> tuple[retention.Purged, float]:
                began = time.perf_counter()
                done = await retention.run_batches(
                    database, timed, before=clock.now() - settings.retention, limit=limit,
                    max_batches=10**6, pause=jobs.RETENTION_PAUSE,
                )  # fmt: skip
                return done, time.perf_counter() - began

            async with probe() as purge_probe:
                during, (purged, seconds) = await _under_load(url, key, purge)
        left = await row_counts(database)
    finally:
        await database.dispose()
    return {
        "rows": args.rows,
        "seed_seconds": round(seeded, 1),
        "purged_rows": purged.total,
        "purge_seconds": round(seconds, 1),
        "rows_per_second": round(purged.total / seconds),
        "batches": len(batch_ms),
        "batch_limit": limit,
        "batch_ms": _stats(batch_ms),
        "write_and_commit_ms": _stats(holds),
        "left": left,
        "lock_wait_ms_baseline": _stats(base_waits),
        "lock_wait_ms_purge": _stats(list(purge_probe.waits)),
        "load_baseline": baseline.summary(),
        "load_purge": during.summary(),
    }


def _hold_times() -> list[float]:
    """Times (ms) from a batch's first write to its commit's end: how long it holds SQLite's
    write lock (on PostgreSQL, its row locks), whatever the machine's noise does to the
    waiters; filled while the purge runs."""
    holds: list[float] = []
    original = retention._Plan.write

    async def write(plan: retention._Plan, session: Any) -> retention.Purged:
        session.info["write_started"] = time.perf_counter()
        return await original(plan, session)

    def committed(session: Any) -> None:
        started = session.info.pop("write_started", None)
        if started is not None:
            holds.append((time.perf_counter() - started) * 1000)

    retention._Plan.write = write  # type: ignore[method-assign,assignment]
    event.listen(OrmSession, "after_commit", committed)
    return holds


def _settings(url: str, tmp: Path) -> Settings:
    return Settings(
        database_url=url, secret_key=SECRET, var_dir=tmp, require_verified_domains=False,
        hostname="mta.bench.test", db_pool_size=4, db_max_overflow=4, rate_limit="off",
    )  # fmt: skip


async def run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    """The embedded database, in a fresh file."""
    tmp = Path(tempfile.mkdtemp(prefix="columba-bench-purge-"))
    path = tmp / "columba.db"
    settings = _settings(f"sqlite+aiosqlite:///{path}", tmp)
    return await measure(settings, lambda: SqliteProbe(path), args)


async def run_postgres(args: argparse.Namespace) -> dict[str, Any]:
    """A database of its own on the server of `--postgres`, dropped afterwards."""
    name = f"columba_bench_purge_{int(time.time())}"
    url = await create_test_database(args.postgres, name)
    try:
        settings = _settings(url, Path(tempfile.mkdtemp(prefix="columba-bench-purge-")))
        return await measure(settings, lambda: PostgresProbe(url), args)
    finally:
        await drop_test_database(args.postgres, url)


async def main(args: argparse.Namespace) -> int:
    """Each database in turn; exit status 1 when a lock wait reached the goal."""
    results: dict[str, Any] = {}
    runners = {"sqlite": run_sqlite, "postgres": run_postgres}
    for name in args.databases.split(","):
        print(f"{name}:", flush=True)
        results[name] = await runners[name](args)
        print(json.dumps(results[name], indent=2), flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"purge-{stamp}.json").write_text(json.dumps(results, indent=2))
    worst = {name: r["lock_wait_ms_purge"].get("max", 0.0) for name, r in results.items()}
    met = all(wait < GOAL_MS for wait in worst.values())
    verdict = "met" if met else "NOT met"
    print(f"longest lock wait during the purge: {worst} (goal < {GOAL_MS:.0f} ms): {verdict}")
    return 0 if met else 1


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--baseline", type=float, default=10.0, help="Seconds of load alone.")
    parser.add_argument(
        "--limit", type=int, default=None, help="Rows per batch [default: the worker's]."
    )
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
