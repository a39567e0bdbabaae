"""CPU per accepted send inside one API process, without a network or a load generator.

The app runs in this process behind httpx's ASGI transport; N sends go through it with
`--concurrency` in flight, and the figure is this process's CPU time (`time.process_time`)
per accepted send. PostgreSQL and Redis run in their own processes, so their CPU is not
counted: the figure is what one API process spends, which is what bounds its requests per
second. `--profile out.prof` writes a cProfile of the measured run.

    python -m bench.api_cpu --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        --redis redis://127.0.0.1:6379/11 [--sends 2000] [--concurrency 32] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import secrets
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.accounts import service as accounts
from app.core import migrate
from app.core.config import Settings
from app.core.db import Database
from app.domains import service as domains
from app.main import create_app
from bench.send import v1_body, v3_body
from tests.support import create_test_database

Body = Callable[[str, int], dict[str, Any]]
SCENARIOS: dict[str, tuple[str, Body]] = {
    "v1": ("/v1/send", v1_body),
    "v3": ("/v3/mail/send", lambda sender, _index: v3_body(sender, 1)),
}


async def _provision(settings: Settings) -> str:
    """An account with a key and a sending domain; returns the key."""
    database = Database(settings)
    try:
        async with database.session() as session:
            account = await accounts.get_or_create_account(session, name="bench")
            issued = await accounts.create_key(session, account=account, name="bench", scopes=None)
            await domains.add_domain(
                session, account=account, name="bench.test", secret_key=settings.secret_key_bytes()
            )
            await session.commit()
        return issued.plaintext
    finally:
        await database.dispose()


async def _sends(
    client: httpx.AsyncClient, path: str, body: Body, count: int, concurrency: int
) -> list[float]:
    """`count` sends, `concurrency` at a time; returns each one's latency in ms."""
    latencies: list[float] = []
    counter = iter(range(count))

    async def loop() -> None:
        for index in counter:
            started = time.perf_counter()
            response = await client.post(path, json=body("bench@bench.test", index))
            if response.status_code != 202:
                raise SystemExit(f"{path}: {response.status_code} {response.text}")
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies


async def main(args: argparse.Namespace) -> None:
    """Provision, warm up, measure each scenario."""
    database_url = await create_test_database(args.postgres, "columba_cpu_" + secrets.token_hex(4))
    await asyncio.to_thread(migrate.upgrade, database_url)
    settings = Settings(
        database_url=database_url,
        redis_url=args.redis,
        secret_key="bench-secret-" + "b" * 40,
        require_verified_domains=False,
        db_pool_size=args.concurrency,
        rate_limit="1000000/1m",
    )
    key = await _provision(settings)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as client,
    ):
        for name in args.scenarios.split(","):
            path, body = SCENARIOS[name]
            await _sends(client, path, body, 200, args.concurrency)  # warm-up: caches, pools
            profile = cProfile.Profile() if args.profile else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            latencies = await _sends(client, path, body, args.sends, args.concurrency)
            if profile:
                profile.disable()
                profile.dump_stats(Path(f"{args.profile}.{name}"))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(
                f"{name}: {cpu / args.sends * 1000:.3f} ms CPU per send, "
                f"{args.sends / wall:.0f} sends/s in-process, "
                f"p50 {statistics.median(latencies):.1f} ms"
            )


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scenarios", default="v1,v3")
    parser.add_argument("--profile", help="write cProfile stats to PROFILE.<scenario>")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
