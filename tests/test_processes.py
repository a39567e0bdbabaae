"""How Columba's processes behave as processes (issue 10, item 12): whom `columba api` believes
about client addresses, the files `columba dev` leaves readable, how `columba dev` stops, and
the embedded Redis that processes of one data directory share. Real processes throughout."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from app.core import migrate
from tests.fakes.mx import free_port

COLUMBA = [sys.executable, "-m", "app.cli"]
ROOT = str(Path(__file__).resolve().parent.parent)
SECRET_KEY = "process-test-secret-" + "p" * 32


def clean_env(**settings: str) -> dict[str, str]:
    """The environment without any COLUMBA_ setting of the test run, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLUMBA_")}
    return env | {"PYTHONPATH": ROOT} | {f"COLUMBA_{k.upper()}": v for k, v in settings.items()}


async def production_env(var_dir: Path, **settings: str) -> dict[str, str]:
    """Settings `columba api` and `columba worker` accept, with a migrated SQLite database."""
    database_url = f"sqlite+aiosqlite:///{var_dir / 'columba.db'}"
    await asyncio.to_thread(migrate.upgrade, database_url)  # Alembic runs its own loop
    return clean_env(
        database_url=database_url,
        var_dir=str(var_dir),
        secret_key=SECRET_KEY,
        hostname="mta.columba.test",
        **settings,
    )


@asynccontextmanager
async def running(
    *args: str, env: dict[str, str], cwd: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A columba command running until the block ends (then SIGTERM, and it must exit)."""
    process = await asyncio.create_subprocess_exec(
        *COLUMBA,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await process.wait()


async def until_healthy(url: str) -> None:
    """Until GET /healthz answers 200."""
    async with asyncio.timeout(30), httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("trusted", "limited"),
    [("", True), ("10.0.0.0/8, 127.0.0.1, ::1", False)],
    ids=["nobody trusted", "the proxy trusted"],
)
async def test_forwarded_addresses_are_believed_only_from_trusted_proxies(
    tmp_path: Path, redis_url: str, trusted: str, limited: bool
) -> None:
    """Bad keys are limited per client address (2 a minute here). A client that says in
    X-Forwarded-For that it is someone else each time escapes that limit only when the API
    believes the header, which it does only from COLUMBA_FORWARDED_ALLOW_IPS."""
    settings = {"redis_url": redis_url, "rate_limit": "2/1m"}
    if trusted:
        settings["forwarded_allow_ips"] = trusted
    env = await production_env(tmp_path / "var", **settings)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with running("api", "--port", str(port), env=env, cwd=tmp_path):
        await until_healthy(url)
        async with httpx.AsyncClient(base_url=url) as http:
            codes = []
            for i in range(4):
                claimed = {"Authorization": "Bearer SG.x.y", "X-Forwarded-For": f"10.0.0.{i}"}
                codes.append((await http.get("/v1/events", headers=claimed)).status_code)
    assert codes == ([401, 401, 429, 429] if limited else [401, 401, 401, 401])
