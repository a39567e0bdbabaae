"""A private PostgreSQL cluster and a private redis-server, each on a port of its own, for
tests that stop, restart or empty them: the machine's servers are shared and never touched."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.fakes.mx import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"


def _as_postgres(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as the `postgres` user (initdb refuses to run as root)."""
    return subprocess.run(
        ["runuser", "-u", PG_USER, "--", *command], check=True, capture_output=True, text=True
    )


class PrivatePostgres:
    """A throwaway cluster (initdb into a temporary directory), fsync on, trust on loopback."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="columba-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        shutil.chown(self.root, PG_USER, PG_USER)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        """Create the cluster (initdb's own --no-sync only speeds up creating it: the server
        runs with fsync on, its default)."""
        _as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", PG_USER,
            "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=on -c max_connections=100 -c shared_buffers=32MB"
        )
        _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: roll back and disconnect; `immediate`: no shutdown
        checkpoint, crash recovery at the next start)."""
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, characters: int = 4000) -> str:
        """The end of the server's log, for a failing test's output."""
        try:
            return self.log.read_text(errors="replace")[-characters:]
        except OSError:
            return ""


class PrivateRedis:
    """A redis-server without persistence: stopped and started again, it is empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Its redis:// URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start a fresh, empty server and wait until it answers PING."""
        self.process = await asyncio.create_subprocess_exec(
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--loglevel", "warning"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    await client.ping()
                    return
                except (RedisError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """Kill the server (nothing is saved) and wait until it is gone."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None
