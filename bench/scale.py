"""Scaling across processes (issue 17): one PostgreSQL, one Redis, 1 → 2 → 4 processes.

  (a) accepting: `POST /v1/send` (one recipient, 1 KB) from wrk against `columba api
      --workers N` (N processes sharing the port), no worker: requests per second
  (b) delivering: N `columba worker` processes drain a fixed backlog of personalized copies
      (queued through the API beforehand, with no worker running) to smtp-sink: messages per
      second from the first delivery to 98% of the backlog (start-up is not counted)
  (c) 4 API processes and 4 workers together (wrk sending single-recipient messages that the
      workers deliver), directly and through a private PgBouncer in transaction mode: the
      PostgreSQL connections each way

Each point also records the CPU per request or message of each component (API, workers, the
stack's PostgreSQL backends, Redis) from /proc and the most PostgreSQL connections open to the
stack's database at once (sampled every 0.2 s). With `--pgbouncer` (the default when PgBouncer
is installed) (a) and (b) run once more with 4 processes through the private PgBouncer.

  python -m bench.scale [--seconds 10] [--rounds 2] [--backlog 4000] [--counts 1,2,4]
                        [--no-pgbouncer] [--postgres URL]

Rates are compared with the 1-process figure of the same run only. Needs bench/setup.sh's
wrk and smtp-sink and a PostgreSQL server on this machine (for the CPU of its backends).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.core.db import Database
from app.messages.models import Recipient
from bench import delivery
from bench.delivery import STACK_ENV
from bench.mta import Sink
from bench.procs import CpuMeter, postgres_backends
from bench.send import v1_body
from bench.stack import ROOT, Stack, _environment, _spawn, running_stack
from bench.wrk import WrkRun, constant_script, run_wrk, sends_script
from tests.fakes.mx import free_port
from tests.pooler import PgBouncer, pgbouncer_binary, private_pgbouncer

RESULTS = ROOT / "bench" / "results"
WRK_CONNECTIONS = 32  # as hotpath line 1
# Every process's pool: 4 kept + 4 more under load. 8 processes (part c) may open 64 at most,
# under PostgreSQL's default max_connections of 100 that the machine's other users share.
POOL_ENV = {"COLUMBA_DB_POOL_SIZE": "4", "COLUMBA_DB_MAX_OVERFLOW": "4"}
PGBOUNCER_POOL = 20  # PgBouncer's server connections (default_pool_size's default)
COPIES_PER_REQUEST = 500  # the backlog is queued by /v3/mail/send of this many personalizations


@dataclass
class Point:
    """One measured configuration."""

    part: str  # "api", "workers" or "mixed"
    mode: str  # "direct" or "pgbouncer"
    processes: int
    rate: float  # accepted sends/s (api), delivered messages/s (workers, mixed)
    units: int  # requests or messages the CPU was measured over
    cpu_ms: dict[str, float] = field(default_factory=dict)  # component → ms per unit
    pg_connections: int = 0  # most backends open to the stack's database at once
    pooler_clients: int = 0  # most client connections to PgBouncer at once
    extra: dict[str, Any] = field(default_factory=dict)


# --- sampling -------------------------------------------------------------------------------


def _established_to(port: int) -> int:
    """Established TCP connections accepted on `port` (from /proc/net/tcp)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


@contextlib.contextmanager
def sampling(database: str, pooler_port: int | None) -> Iterator[dict[str, int]]:
    """The most PostgreSQL backends of `database` (and clients of the pooler) seen at once,
    sampled every 0.2 s until the block ends."""
    peak = {"pg": 0, "clients": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["pg"] = max(peak["pg"], len(postgres_backends(database)))
            if pooler_port is not None:
                peak["clients"] = max(peak["clients"], _established_to(pooler_port))
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def meter(stack: Stack, worker_pids: Callable[[], list[int]]) -> CpuMeter:
    """CPU of the API, the workers, the stack's PostgreSQL backends and its Redis."""
    found = delivery.meter_for(stack)
    found.roots["worker"] = worker_pids
    return found


def per_unit(cpu: dict[str, float], units: int) -> dict[str, float]:
    """CPU seconds per component → milliseconds per unit."""
    return {name: round(1000 * used / max(units, 1), 3) for name, used in cpu.items()}


def database_name(stack: Stack) -> str:
    """The stack's database (its PostgreSQL backends carry the name)."""
    return make_url(stack.settings.database_url).database or ""


# --- stacks ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stack(
    args: argparse.Namespace,
    bouncer: PgBouncer | None,
    *,
    api_workers: int,
    sink_port: int | None = None,
) -> AsyncIterator[Stack]:
    """A Columba (its own database) with no worker; through `bouncer` when given."""
    env = STACK_ENV | POOL_ENV
    postgres = args.postgres
    if bouncer is not None:
        # The database is created through PgBouncer too (its `*` entry reaches any database).
        postgres = bouncer.url_for(args.postgres)
        env = env | {"COLUMBA_DATABASE_POOLER": "pgbouncer"}
    with _pooler_env(bouncer):
        async with running_stack(
            postgres_url=postgres,
            redis_url=args.redis,
            workers=0,
            api_workers=api_workers,
            external_sink_port=sink_port,
            extra_env=env,
            log_dir=args.scratch / f"logs-{time.monotonic_ns()}",
        ) as started:
            yield started


@contextlib.contextmanager
def _pooler_env(bouncer: PgBouncer | None) -> Iterator[None]:
    """COLUMBA_DATABASE_POOLER for the migrations this process runs through PgBouncer."""
    if bouncer is None:
        yield
        return
    before = os.environ.get("COLUMBA_DATABASE_POOLER")
    os.environ["COLUMBA_DATABASE_POOLER"] = "pgbouncer"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COLUMBA_DATABASE_POOLER", None)
        else:
            os.environ["COLUMBA_DATABASE_POOLER"] = before


@contextlib.contextmanager
def workers(stack: Stack, count: int, env_extra: dict[str, str]) -> Iterator[list[int]]:
    """`count` `columba worker` processes on the stack, stopped when the block ends."""
    env = _environment(stack.settings) | STACK_ENV | POOL_ENV | env_extra
    processes = [
        _spawn(["worker"], env, stack.settings.var_dir / f"scale-worker{i}.log")
        for i in range(count)
    ]
    try:
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def pooler_env(bouncer: PgBouncer | None) -> dict[str, str]:
    """The worker processes' pooler setting."""
    return {"COLUMBA_DATABASE_POOLER": "pgbouncer"} if bouncer is not None else {}


# --- (a) accepting ---------------------------------------------------------------------------


def api_script(args: argparse.Namespace, s: Stack, name: str) -> Path:
    """`--api-body constant`: hot-path line 1's body (1 KB, a category and metadata, the same
    recipient every time); `fresh`: (c)'s (~2 KB, no category, a new recipient each time)."""
    if args.api_body == "constant":
        return constant_script(v1_body(s.sender), s.headers(), args.scratch, name)
    return sends_script(
        delivery.single_sends(s),
        s.headers(),
        args.scratch / name,
        quota=10**9,
        connections=WRK_CONNECTIONS,
        tag=f"a{time.monotonic_ns() % 10**9}",
    )


async def api_point(args: argparse.Namespace, bouncer: PgBouncer | None, count: int) -> Point:
    """`columba api --workers count`, wrk for --seconds, --rounds times: median req/s."""
    mode = "pgbouncer" if bouncer else "direct"
    async with stack(args, bouncer, api_workers=count) as s:
        script = api_script(args, s, f"api-{mode}{count}")
        url = s.api_url + "/v1/send"
        await asyncio.to_thread(
            run_wrk, "warm-up", url, script, connections=WRK_CONNECTIONS, seconds=2
        )
        rates: list[float] = []
        p50s: list[float] = []
        used: dict[str, float] = {}
        requests = 0
        cpu = meter(s, list)
        cpu.roots.pop("worker")  # none runs: (a) measures accepting only
        with sampling(database_name(s), bouncer.port if bouncer else None) as peak:
            for _ in range(args.rounds):
                cpu.start()
                result = await asyncio.to_thread(
                    run_wrk,
                    f"api {mode} {count}",
                    url,
                    script,
                    connections=WRK_CONNECTIONS,
                    seconds=args.seconds,
                )
                for name, seconds in cpu.stop().items():
                    used[name] = used.get(name, 0.0) + seconds
                rates.append(result.requests_per_second)
                requests += result.requests
                p50s.append(result.p50_ms)
                if result.errors:
                    raise RuntimeError(f"{result.errors} sends were refused")
    point = Point(
        "api",
        mode,
        count,
        statistics.median(rates),
        requests,
        per_unit(used, requests),
        peak["pg"],
        peak["clients"],
        {"rounds": rates, "p50_ms": statistics.median(p50s)},
    )
    print(f"  (a) {mode} {count} API: {point.rate:,.0f} req/s {point.cpu_ms}", flush=True)
    return point


# --- (b) delivering --------------------------------------------------------------------------


async def queued(database: Database) -> int:
    """Recipients in the database."""
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Recipient)) or 0)


async def queue_backlog(s: Stack, database: Database, backlog: int, scratch: Path) -> None:
    """`backlog` personalized copies queued through the API (no worker runs yet)."""
    requests = max(1, backlog // COPIES_PER_REQUEST)
    target = await queued(database) + requests * COPIES_PER_REQUEST
    script = sends_script(
        delivery.personalized_sends(s, COPIES_PER_REQUEST),
        s.headers(),
        scratch / f"backlog-{time.monotonic_ns()}",
        quota=requests,
        connections=2,
        tag=f"b{time.monotonic_ns() % 10**9}",
    )
    run = WrkRun(s.api_url, script, connections=2)
    try:
        while True:  # until the API has written every copy (wrk idles once its quota is met)
            if await queued(database) >= target:
                break
            if run.finished():
                break  # it failed: its counts below say how
            await asyncio.sleep(0.1)
    finally:
        _, accepted, refused = run.stop("backlog")
    if accepted < requests or refused:
        raise RuntimeError(f"backlog: {accepted} of {requests} accepted, {refused} refused")


async def wait_for_delivered(database: Database, count: int, stall: float = 120) -> int:
    """Until `count` recipients are recorded delivered (polled every 50 ms); fails when none
    is for `stall` seconds. The database, not smtp-sink's counter: smtp-sink writes its count
    to a pipe in blocks of hundreds of messages, too coarse for a rate's start and end."""
    last, moved = -1, time.monotonic()
    while (done := await delivery.delivered(database)) < count:
        if done != last:
            last, moved = done, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise RuntimeError(f"nothing delivered for {stall:.0f} s ({done} of {count})")
        await asyncio.sleep(0.05)
    return done


async def worker_point(args: argparse.Namespace, bouncer: PgBouncer | None, count: int) -> Point:
    """`count` workers drain --backlog copies, --rounds times: median messages per second
    between 10% and 90% of each backlog."""
    mode = "pgbouncer" if bouncer else "direct"
    sink_port = free_port()
    rates: list[float] = []
    used: dict[str, float] = {}
    measured = short = 0  # short: copies not delivered when the round ended (deferred)
    with Sink("127.0.0.1", sink_port):
        async with stack(args, bouncer, api_workers=1, sink_port=sink_port) as s:
            database = Database(s.settings)  # with the pooler setting, from the environment
            try:
                with sampling(database_name(s), bouncer.port if bouncer else None) as peak:
                    for _ in range(args.rounds):
                        start = await delivery.delivered(database)
                        await queue_backlog(s, database, args.backlog, args.scratch)
                        total = max(1, args.backlog // COPIES_PER_REQUEST) * COPIES_PER_REQUEST
                        # From the first delivery (the workers' start-up is before it) to
                        # 98% (a copy deferred by a busy machine must not stop the clock).
                        # Not 10%–90%: 4 workers hold 4 × WORKER_CAPACITY copies in flight at
                        # once, the whole backlog here, so the middle of it arrives in a burst.
                        low, high = start + 1, start + total * 98 // 100
                        with workers(s, count, pooler_env(bouncer)) as pids:
                            cpu = meter(s, functools.partial(list, pids))
                            low = await wait_for_delivered(database, low)
                            cpu.start()
                            began = time.perf_counter()
                            high = await wait_for_delivered(database, high)
                            seconds = time.perf_counter() - began
                            for name, spent in cpu.stop().items():
                                used[name] = used.get(name, 0.0) + spent
                            with contextlib.suppress(RuntimeError):  # e.g. deferred: see below
                                await wait_for_delivered(database, start + total, stall=30)
                            short += start + total - await delivery.delivered(database)
                        rates.append((high - low) / seconds)
                        measured += high - low
            finally:
                await database.dispose()
    point = Point(
        "workers",
        mode,
        count,
        statistics.median(rates),
        measured,
        per_unit(used, measured),
        peak["pg"],
        peak["clients"],
        {"rounds": rates, "undelivered_at_round_end": short},
    )
    print(
        f"  (b) {mode} {count} workers: {point.rate:,.0f} msg/s {point.cpu_ms} "
        f"({short} not delivered when the rounds ended)",
        flush=True,
    )
    return point


# --- (c) 4 API processes and 4 workers together -----------------------------------------------


async def mixed_point(args: argparse.Namespace, bouncer: PgBouncer | None, count: int) -> Point:
    """`count` API processes and `count` workers; wrk sends single-recipient messages for
    --seconds while the workers deliver them: connections open, rates."""
    mode = "pgbouncer" if bouncer else "direct"
    sink_port = free_port()
    with Sink("127.0.0.1", sink_port):
        async with stack(args, bouncer, api_workers=count, sink_port=sink_port) as s:
            database = Database(s.settings)
            with workers(s, count, pooler_env(bouncer)) as pids:
                script = sends_script(
                    delivery.single_sends(s),
                    s.headers(),
                    args.scratch / f"mixed-{mode}",
                    quota=10**9,
                    connections=WRK_CONNECTIONS,
                    tag=f"m{time.monotonic_ns() % 10**9}",
                )
                warm = WrkRun(s.api_url, script, connections=WRK_CONNECTIONS, seconds=3)
                await asyncio.to_thread(warm.process.wait)  # and the workers start meanwhile
                warm.stop("warm-up")
                await wait_for_delivered(database, 1)  # the workers are up
                cpu = meter(s, lambda: pids)
                with sampling(database_name(s), bouncer.port if bouncer else None) as peak:
                    run = WrkRun(
                        s.api_url, script, connections=WRK_CONNECTIONS, seconds=args.seconds
                    )
                    before = await delivery.delivered(database)
                    cpu.start()
                    began = time.perf_counter()
                    await asyncio.to_thread(run.process.wait)  # its -d runs out
                    seconds = time.perf_counter() - began
                    delivered = await delivery.delivered(database) - before
                    used = cpu.stop()
                    _, accepted, refused = run.stop("mixed")
            await database.dispose()
    point = Point(
        "mixed",
        mode,
        count,
        delivered / seconds,
        max(delivered, 1),
        per_unit(used, max(delivered, 1)),
        peak["pg"],
        peak["clients"],
        {"accepted_per_s": accepted / seconds, "refused": refused},
    )
    print(
        f"  (c) {mode} {count} API + {count} workers: accepted {accepted / seconds:,.0f}/s, "
        f"delivered {point.rate:,.0f}/s, PostgreSQL connections {point.pg_connections}",
        flush=True,
    )
    return point


# --- the table ------------------------------------------------------------------------------


def _cpu(point: Point, *names: str) -> str:
    return " | ".join(f"{point.cpu_ms.get(name, 0.0):.2f}" for name in names)


def table(points: list[Point]) -> str:
    """The markdown tables for bench/README.md."""
    out = []
    base = {p.part: p.rate for p in points if p.mode == "direct" and p.processes == 1}
    out.append(
        "| (a) accepting | API processes | req/s | vs 1 | ms CPU/request: API | PostgreSQL "
        "| Redis | PostgreSQL connections (peak) |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for p in (p for p in points if p.part == "api"):
        ratio = p.rate / base["api"] if "api" in base else 0.0
        out.append(
            f"| {p.mode} | {p.processes} | {p.rate:,.0f} | {ratio:.2f}× | "
            f"{_cpu(p, 'api', 'postgres', 'redis')} | {_connections(p)} |"
        )
    out.append("")
    out.append(
        "| (b) delivering | workers | msg/s | vs 1 | ms CPU/message: worker | PostgreSQL "
        "| Redis | API | PostgreSQL connections (peak) |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in (p for p in points if p.part == "workers"):
        ratio = p.rate / base["workers"] if "workers" in base else 0.0
        out.append(
            f"| {p.mode} | {p.processes} | {p.rate:,.0f} | {ratio:.2f}× | "
            f"{_cpu(p, 'worker', 'postgres', 'redis', 'api')} | {_connections(p)} |"
        )
    mixed = [p for p in points if p.part == "mixed"]
    if mixed:
        out.append("")
        out.append(
            "| (c) together | API + workers | accepted/s | delivered/s | "
            "PostgreSQL connections (peak) |"
        )
        out.append("|---|---|---:|---:|---:|")
        for p in mixed:
            out.append(
                f"| {p.mode} | {p.processes} + {p.processes} | "
                f"{p.extra['accepted_per_s']:,.0f} | {p.rate:,.0f} | {_connections(p)} |"
            )
    return "\n".join(out)


def _connections(point: Point) -> str:
    if point.mode == "pgbouncer":
        return f"{point.pg_connections} (clients of PgBouncer: {point.pooler_clients})"
    return str(point.pg_connections)


# --- running --------------------------------------------------------------------------------


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def save(args: argparse.Namespace, points: list[Point], load: dict[str, str]) -> Path:
    """bench/results/scale-<time>.json."""
    args.results.mkdir(parents=True, exist_ok=True)
    out: Path = args.results / f"scale-{args.stamp}.json"
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    document = {
        "cpus": os.cpu_count(),
        "uptime": load,
        "options": options,
        "points": [asdict(p) for p in points],
    }
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return out


async def measure(args: argparse.Namespace, points: list[Point]) -> None:
    """Every point asked for, in order; the PgBouncer ones last."""
    if "a" in args.parts:
        for count in args.counts:
            points.append(await api_point(args, None, count))
    if "b" in args.parts:
        for count in args.counts:
            points.append(await worker_point(args, None, count))
    if not args.pgbouncer:
        return
    top = max(args.counts)
    with private_pgbouncer(args.postgres, pool_size=PGBOUNCER_POOL) as bouncer:
        if "a" in args.parts:
            points.append(await api_point(args, bouncer, top))
        if "b" in args.parts:
            points.append(await worker_point(args, bouncer, top))
        if "c" in args.parts:
            points.append(await mixed_point(args, None, top))
            points.append(await mixed_point(args, bouncer, top))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="per wrk round, (a) and (c)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per point (median)")
    parser.add_argument("--backlog", type=int, default=4000, help="copies per round of (b)")
    parser.add_argument(
        "--counts", type=lambda t: [int(n) for n in t.split(",")], default=[1, 2, 4]
    )
    parser.add_argument("--api-body", choices=["constant", "fresh"], default="constant")
    parser.add_argument(
        "--parts", type=lambda t: set(t.split(",")), default={"a", "b", "c"}, help="e.g. a,b"
    )
    parser.add_argument(
        "--pgbouncer",
        action=argparse.BooleanOptionalAction,
        default=pgbouncer_binary() is not None,
        help="also through a private PgBouncer (default: when installed)",
    )
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis", help="Redis URL (default: an embedded one per stack)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    """Measure, print the table with the load before and after, save the JSON."""
    args = parse_args(argv)
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.scratch = Path(tempfile.mkdtemp(prefix="columba-scale-"))
    load = {"before": _uptime()}
    print(f"before: {load['before']}", flush=True)
    points: list[Point] = []
    try:
        await measure(args, points)
    finally:
        load["after"] = _uptime()
        out = save(args, points, load)
        print(f"\nbefore: {load['before']}\nafter:  {load['after']}\n", flush=True)
        print(table(points))
        print(f"\n{out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
