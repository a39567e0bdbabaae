"""The tracking endpoints (issue 12) against the bare FastAPI endpoint, in one run:

  open    GET  /t/o/{token}   the pixel: one primary-key read, one event       vs bare GET
  click   GET  /t/c/{token}   the redirect: the same                          vs bare GET
  unsub   POST /u/{token}     RFC 8058 one-click, repeated (idempotent)       vs bare form POST

PostgreSQL, 1 API process, wrk (C) with 32 connections. The bare baselines are
bench/bare_app.py's GET /pixel/{token} (a 43-byte GIF) and POST /form/{token} (reads the body),
under uvicorn with the same worker count. Goal: each ≥ 50% of its baseline's requests/s.

  python -m bench.tracking [--quick] [--postgres URL] [--seconds N]

Figures go to bench/results/tracking-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from app.accounts.models import Account
from app.core.db import Database
from app.events.models import Event
from app.tracking.tokens import Kind, Token, TrackedRecipient, link
from bench.delivery import STACK_ENV
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
    """One endpoint against its baseline."""

    name: str
    columba: Result
    bare: Result

    @property
    def ratio(self) -> float:
        """Columba's requests/s over the bare endpoint's."""
        return self.columba.requests_per_second / self.bare.requests_per_second


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


def bare_results(scratch: Path, seconds: float) -> tuple[Result, Result]:
    """The bare FastAPI GET and form POST, measured first in the same run."""
    with bare_api(1) as url:
        get = measure(
            "bare GET", url + "/pixel/abc", script(scratch, "bare-get", post=False), seconds
        )
        post = measure(
            "bare POST", url + "/form/abc", script(scratch, "bare-post", post=True), seconds
        )
    return get, post


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


async def columba_results(
    args: argparse.Namespace, scratch: Path, seconds: float
) -> tuple[dict[str, Result], dict[str, int]]:
    """Each tracking endpoint of a Columba on PostgreSQL with one API process."""
    env = STACK_ENV | {"COLUMBA_DB_POOL_SIZE": str(CONNECTIONS)}
    async with running_stack(
        postgres_url=args.postgres, redis_url=args.redis, workers=1, extra_env=env
    ) as stack:
        tracked = await delivered_recipient(stack)
        await asyncio.sleep(SETTLE_SECONDS)
        key = stack.settings.secret_key_bytes()
        urls = {
            "open": link(stack.api_url, Token(Kind.OPEN, tracked), secret_key=key),
            "click": link(
                stack.api_url,
                Token(Kind.CLICK, tracked, "https://shop.example/sale?id=1"),
                secret_key=key,
            ),
            "unsubscribe": link(stack.api_url, Token(Kind.UNSUBSCRIBE, tracked), secret_key=key),
        }
        results = {}
        for name, url in urls.items():
            lua = script(scratch, name, post=name == "unsubscribe")
            profile = Profile(stack.api_pid, scratch / f"{name}.raw.txt") if args.profile else None
            results[name] = await asyncio.to_thread(measure, name, url, lua, seconds)
            if profile is not None and (raw := profile.stop()) is not None:
                summary, _ = write_summary(raw, f"API process, {name}")
                print(f"profile: {summary}")
        return results, await events_recorded(stack)


def report(lines: list[Line], recorded: dict[str, int], out: Path) -> None:
    """Print the table and save the figures."""
    print(f"{'endpoint':<34}{'columba req/s':>14}{'bare req/s':>12}{'ratio':>8}  p50 / p99")
    for line in lines:
        met = "✓" if line.ratio >= GOAL else "✗"
        print(
            f"{line.name:<34}{line.columba.requests_per_second:>14,.0f}"
            f"{line.bare.requests_per_second:>12,.0f}{line.ratio:>7.2f}{met}"
            f"  {line.columba.p50_ms:.1f} / {line.columba.p99_ms:.1f} ms"
        )
    print(f"events written: {recorded}")
    document = {
        "when": datetime.now(UTC).isoformat(),
        "load": list(os.getloadavg()),
        "lines": [
            {
                "name": line.name,
                "ratio": line.ratio,
                "columba": asdict(line.columba),
                "bare": asdict(line.bare),
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
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis", help="Redis URL (default: an embedded one)")
    parser.add_argument("--profile", action="store_true", help="py-spy the API process")
    args = parser.parse_args(argv)
    seconds = 3 if args.quick else args.seconds
    scratch = Path(tempfile.mkdtemp(prefix="columba-tracking-"))
    bare_get, bare_post = await asyncio.to_thread(bare_results, scratch, seconds)
    results, recorded = await columba_results(args, scratch, seconds)
    lines = [
        Line("GET /t/o/{token} (open pixel)", results["open"], bare_get),
        Line("GET /t/c/{token} (click redirect)", results["click"], bare_get),
        Line("POST /u/{token} (one-click, repeated)", results["unsubscribe"], bare_post),
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report(lines, recorded, RESULTS / f"tracking-{stamp}.json")
    return 0 if all(line.ratio >= GOAL for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
