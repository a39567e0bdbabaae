"""The tracking endpoints (issue 12) against the bare FastAPI endpoint, in one run:

  open    GET  /t/o/{token}   the pixel: one primary-key read, one event       vs bare GET
  click   GET  /t/c/{token}   the redirect: the same                          vs bare GET
  unsub   POST /u/{token}     RFC 8058 one-click, repeated (idempotent)       vs bare form POST

PostgreSQL, 1 API process, wrk (C) with 32 connections. The bare baselines are
bench/bare_app.py's GET /pixel/{token} (a 43-byte GIF) and POST /form/{token} (reads the body),
under uvicorn with the same worker count, running beside Columba for the whole run. On a shared
machine the load drifts over a minute, so each endpoint and its baseline are measured back to
back, for several rounds, and the median of the rounds' ratios is reported. Goal: each ≥ 50%
of its baseline's requests/s.

  python -m bench.tracking [--quick] [--rounds N] [--seconds N] [--postgres URL] [--profile]

Figures go to bench/results/tracking-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from app.accounts.models import Account
from app.core.db import Database
from app.events.models import Event
from app.tracking.tokens import Kind, Token, TrackedRecipient, link
from bench.delivery import STACK_ENV, meter_for
from bench.procs import Profile, write_summary
from bench.send import bare_api
from bench.stack import ROOT, Stack, running_stack
from bench.wrk import Result, run_wrk

RESULTS = ROOT / "bench" / "results"
CONNECTIONS = 32
GOAL = 0.5
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058 §3.2
# Past the seconds after delivery in which fetches count as machines' (app.tracking.machines):
# the people's path, with its engagement INSERT, is the one measured.
SETTLE_SECONDS = 6


@dataclass(frozen=True)
class Line:
    """One endpoint against its baseline, over the rounds."""

    name: str
    columba: list[Result]
    bare: list[Result]
    cpu_ms: list[dict[str, float]] = field(default_factory=list)  # per request, per process

    @property
    def ratios(self) -> list[float]:
        """Columba's requests/s over the bare endpoint's, round by round."""
        return [
            c.requests_per_second / b.requests_per_second
            for c, b in zip(self.columba, self.bare, strict=True)
        ]

    @property
    def ratio(self) -> float:
        """The median round's ratio."""
        return statistics.median(self.ratios)


def script(scratch: Path, name: str, *, post: bool) -> Path:
    """A wrk script: a browser's GET, or RFC 8058's one-click POST."""
    lines = [f'wrk.headers["User-Agent"] = {json.dumps(BROWSER)}']
    if post:
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(ONE_CLICK)}",
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"',
        ]
    path = scratch / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(name: str, url: str, lua: Path, seconds: float) -> Result:
    """A warm-up, then the measured wrk run; every answer must be 2xx or 3xx."""
    run_wrk("warm-up", url, lua, connections=CONNECTIONS, seconds=2)
    result = run_wrk(name, url, lua, connections=CONNECTIONS, seconds=seconds)
    if result.errors:
        raise RuntimeError(f"{name}: {result.errors} answers were not 2xx/3xx")
    return result


async def delivered_recipient(stack: Stack) -> TrackedRecipient:
    """One real send through the API, delivered to the sink."""
    body = {"from": stack.sender, "to": [f"reader@{stack.recipient_domain}"], "subject": "Hi",
            "html": "<p>Hello</p>", "text": "Hello"}  # fmt: skip
    async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.headers()) as http:
        response = await http.post("/v1/send", json=body)
        response.raise_for_status()
        accepted = response.json()
    await stack.sink.wait_for_recipients(1, timeout=60)
    [recipient] = accepted["recipients"]
    return TrackedRecipient(
        await account_of(stack), accepted["id"], recipient["id"], recipient["email"]
    )


async def account_of(stack: Stack) -> str:
    """The bench account's id."""
    database = Database(stack.settings)
    try:
        async with database.session() as session:
            return str((await session.execute(select(Account.id))).scalar_one())
    finally:
        await database.dispose()


async def events_recorded(stack: Stack) -> dict[str, int]:
    """Events by type, to check every request wrote its event."""
    database = Database(stack.settings)
    try:
        async with database.session() as session:
            query = select(Event.type, func.count()).group_by(Event.type)
            return {row[0]: int(row[1]) for row in await session.execute(query)}
    finally:
        await database.dispose()


async def columba_lines(
    args: argparse.Namespace, scratch: Path, seconds: float, bare_url: str
) -> tuple[list[Line], dict[str, int]]:
    """Each tracking endpoint of a Columba on PostgreSQL with one API process, round after
    round, each run right after its baseline's."""
    env = STACK_ENV | {"COLUMBA_DB_POOL_SIZE": str(CONNECTIONS)}
    async with running_stack(
        postgres_url=args.postgres, redis_url=args.redis, workers=1, extra_env=env
    ) as stack:
        tracked = await delivered_recipient(stack)
        await asyncio.sleep(SETTLE_SECONDS)
        lines = []
        for name, url, post in endpoints(stack, tracked):
            lua = script(scratch, name, post=post)
            baseline = bare_url + ("/form/abc" if post else "/pixel/abc")
            bare_lua = script(scratch, f"bare-{name}", post=post)
            line = Line(ENDPOINTS[name], [], [])
            for _ in range(args.rounds):
                line.bare.append(
                    await asyncio.to_thread(measure, "bare", baseline, bare_lua, seconds)
                )
                profile = (
                    Profile(stack.api_pid, scratch / f"{name}.raw.txt") if args.profile else None
                )
                line.columba.append(await measured(stack, line, name, url, lua, seconds))
                if profile is not None and (raw := profile.stop()) is not None:
                    print(f"profile: {write_summary(raw, f'API process, {name}')[0]}")
            lines.append(line)
        return lines, await events_recorded(stack)


async def measured(
    stack: Stack, line: Line, name: str, url: str, lua: Path, seconds: float
) -> Result:
    """One run of an endpoint, with the CPU the API and its PostgreSQL backends spent per
    request (added to the line)."""
    meter = meter_for(stack)
    meter.roots.pop("worker")  # idle here: it delivered the one message before the runs
    meter.start()
    result = await asyncio.to_thread(measure, name, url, lua, seconds)
    used = meter.stop()
    line.cpu_ms.append({k: 1000 * v / max(result.requests, 1) for k, v in used.items()})
    return result


ENDPOINTS = {
    "open": "GET /t/o/{token} (open pixel)",
    "click": "GET /t/c/{token} (click redirect)",
    "unsubscribe": "POST /u/{token} (one-click, repeated)",
}


def endpoints(stack: Stack, tracked: TrackedRecipient) -> list[tuple[str, str, bool]]:
    """(name, URL, POST?) of each endpoint, with a real token of the delivered recipient."""
    key = stack.settings.secret_key_bytes()
    click = Token(Kind.CLICK, tracked, "https://shop.example/sale?id=1")
    return [
        ("open", link(stack.api_url, Token(Kind.OPEN, tracked), secret_key=key), False),
        ("click", link(stack.api_url, click, secret_key=key), False),
        (
            "unsubscribe",
            link(stack.api_url, Token(Kind.UNSUBSCRIBE, tracked), secret_key=key),
            True,
        ),
    ]


def report(lines: list[Line], recorded: dict[str, int], out: Path) -> None:
    """Print the table and save the figures."""
    print(f"{'endpoint':<40}{'columba req/s':>14}{'bare req/s':>12}  ratio (rounds)  p50 / p99")
    for line in lines:
        met = "✓" if line.ratio >= GOAL else "✗"
        rounds = ", ".join(f"{ratio:.2f}" for ratio in line.ratios)
        columba = statistics.median(r.requests_per_second for r in line.columba)
        bare = statistics.median(r.requests_per_second for r in line.bare)
        p50 = statistics.median(r.p50_ms for r in line.columba)
        p99 = statistics.median(r.p99_ms for r in line.columba)
        cpu = {k: statistics.median(c[k] for c in line.cpu_ms) for k in line.cpu_ms[0]}
        print(
            f"{line.name:<40}{columba:>14,.0f}{bare:>12,.0f}  {line.ratio:.2f}{met} ({rounds})"
            f"  {p50:.1f} / {p99:.1f} ms"
            f"  CPU/request: {', '.join(f'{k} {v:.2f} ms' for k, v in cpu.items())}"
        )
    print(f"events written: {recorded}")
    document = {
        "when": datetime.now(UTC).isoformat(),
        "load": list(os.getloadavg()),
        "lines": [
            {
                "name": line.name,
                "ratio": line.ratio,
                "ratios": line.ratios,
                "columba": [asdict(r) for r in line.columba],
                "bare": [asdict(r) for r in line.bare],
            }
            for line in lines
        ],
        "events": recorded,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"saved {out}")


async def main(argv: list[str] | None = None) -> int:
    """Measure the baselines, then Columba; non-zero when a line misses the goal."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3-second runs: a smoke run")
    parser.add_argument("--seconds", type=float, default=10, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/Columba pairs")
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis", help="Redis URL (default: an embedded one)")
    parser.add_argument("--profile", action="store_true", help="py-spy the API process")
    args = parser.parse_args(argv)
    seconds = 3 if args.quick else args.seconds
    if args.quick:
        args.rounds = 1
    scratch = Path(tempfile.mkdtemp(prefix="columba-tracking-"))
    with bare_api(1) as bare_url:
        lines, recorded = await columba_lines(args, scratch, seconds, bare_url)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report(lines, recorded, RESULTS / f"tracking-{stamp}.json")
    return 0 if all(line.ratio >= GOAL for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
