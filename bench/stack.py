"""A whole Columba for benchmarks: database, Redis, DNS, a sink MX, API and worker processes.

The API and the workers run as real `columba` processes, as in production; the bench process
hosts the DNS server and the sink, so that send and arrival times come from one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session

from app.accounts import service as accounts
from app.core import migrate
from app.core.config import Settings
from app.core.db import Database
from app.dev.embedded_redis import embedded_redis_url, stop_embedded_redis
from app.domains import service as domains
from bench.procs import descendants
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import free_port
from tests.support import create_test_database, drop_test_database

ROOT = Path(__file__).resolve().parent.parent
SINK_HOST = "127.0.0.2"
# Seconds for the API's processes to start: importing the app took over 90 s per process at a
# load average of 15 on 2 cores.
STARTUP_TIMEOUT = 300


@dataclass
class Sink:
    """An SMTP server that accepts everything and stamps each message's arrival time."""

    arrivals: dict[str, float] = field(default_factory=dict)  # Message-ID → perf_counter()
    recipients: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """Record the Message-ID and time, then 250."""
        data = envelope.original_content or b""
        start = data.find(b"\nMessage-ID: <")
        message_id = data[start + 14 : data.find(b">", start)].decode() if start >= 0 else ""
        self.arrivals[message_id] = time.perf_counter()
        self.recipients += len(envelope.rcpt_tos)
        self.event.set()
        return "250 2.0.0 OK"

    async def wait_for_recipients(self, count: int, timeout: float) -> None:
        """Until `count` recipients arrived in total."""
        async with asyncio.timeout(timeout):
            while self.recipients < count:
                self.event.clear()
                await self.event.wait()


@dataclass
class Stack:
    """A running Columba with a key, a sending domain and a recipient domain on the sink."""

    api_url: str
    key: str
    sender: str
    recipient_domain: str
    sink: Sink
    settings: Settings
    api_pid: int = 0  # the API process (for profilers and CPU accounting)
    worker_pids: list[int] = field(default_factory=list)

    def redis_pid(self) -> int | None:
        """The embedded redis-server's process, when the stack runs one."""
        pid_file = self.settings.var_dir / "redis.pid"
        return int(pid_file.read_text().strip()) if pid_file.exists() else None

    def headers(self) -> dict[str, str]:
        """Authorization for the bench key."""
        return {"Authorization": f"Bearer {self.key}"}


def _environment(settings: Settings) -> dict[str, str]:
    """The COLUMBA_* variables the child processes need."""
    values: dict[str, Any] = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRET_KEY": settings.secret_key_bytes().decode(),
        "HOSTNAME": settings.hostname,
        "DNS_NAMESERVERS": ",".join(settings.dns_nameservers),
        "MX_PORT": settings.mx_port,
        "ALLOW_PRIVATE_DESTINATIONS": "true",
        "REQUIRE_VERIFIED_DOMAINS": "false",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLUMBA_")}
    env.update({f"COLUMBA_{k}": str(v) for k, v in values.items()})
    env["PYTHONPATH"] = str(ROOT)
    return env


async def _provision(settings: Settings) -> tuple[str, str]:
    """A key and a sending domain; returns (key, domain)."""
    database = Database(settings)
    try:
        async with database.session() as session:
            account = await accounts.get_or_create_account(session, name="bench")
            issued = await accounts.create_key(session, account=account, name="bench", scopes=None)
            domain = await domains.add_domain(
                session, account=account, name="bench.test", secret_key=settings.secret_key_bytes()
            )
            await session.commit()
        return issued.plaintext, domain.name
    finally:
        await database.dispose()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    # The API at INFO: uvicorn's "Application startup complete" of each process is what
    # _wait_started counts (uvicorn logs through Columba's levels since issue 15); text logs
    # write no line per request, so the measurement is unchanged.
    level = "INFO" if args[0] == "api" else "WARNING"
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--log-level", level, *args],
        env=env,
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


async def _wait_healthy(url: str, timeout: float = 30) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


def _wait_started(log: Path, processes: int, timeout: float) -> None:
    """Until each of uvicorn's `processes` API processes has started (not only the first)."""
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count("Application startup complete") < processes:
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)


def _copy_logs(var_dir: Path, log_dir: Path) -> None:
    """The processes' logs, kept for a look after the run."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for log in var_dir.glob("*.log"):
        shutil.copy(log, log_dir / log.name)


async def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then SIGKILL to the whole tree of a process not gone 30 s later (uvicorn's
    children took longer than that at a load average of 13)."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            for pid in reversed(descendants(process.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)


@contextlib.asynccontextmanager
async def running_stack(
    *,
    postgres_url: str | None,
    redis_url: str | None,
    workers: int = 1,
    api_workers: int = 1,
    external_sink_port: int | None = None,
    extra_env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> AsyncIterator[Stack]:
    """Start everything; stop everything when the block ends (the processes' logs are copied
    to `log_dir` then, if given)."""
    with tempfile.TemporaryDirectory(prefix="columba-bench-") as tmp:
        var_dir = Path(tmp)
        if postgres_url:
            database_url = await create_test_database(
                postgres_url, "columba_bench_" + secrets.token_hex(4)
            )
        else:
            database_url = f"sqlite+aiosqlite:///{var_dir / 'bench.db'}"
        await asyncio.to_thread(migrate.upgrade, database_url)
        mx_port = external_sink_port or free_port()
        sink_host = "127.0.0.1" if external_sink_port else SINK_HOST
        async with FakeDNS() as dns_server:
            dns_server.add_mx("sink.test", (10, "mx.sink.test"))
            dns_server.add_a("mx.sink.test", sink_host)
            settings = Settings(
                database_url=database_url,
                redis_url=redis_url or embedded_redis_url(var_dir),
                secret_key="bench-secret-" + "b" * 40,
                hostname="bench.columba.test",
                dns_nameservers=(dns_server.nameserver,),
                mx_port=mx_port,
                var_dir=var_dir,
            )
            key, domain = await _provision(settings)
            sink = Sink()
            server = None
            if external_sink_port is None:
                server = await asyncio.get_running_loop().create_server(
                    lambda: SMTP(sink, hostname="sink.test", decode_data=False), SINK_HOST, mx_port
                )
            env = _environment(settings) | (extra_env or {})
            api_port = free_port()
            processes = [
                _spawn(
                    ["api", "--port", str(api_port), "--workers", str(api_workers)],
                    env,
                    var_dir / "api.log",
                )
            ] + [_spawn(["worker"], env, var_dir / f"worker{i}.log") for i in range(workers)]
            try:
                api_url = f"http://127.0.0.1:{api_port}"
                try:
                    await _wait_healthy(api_url, timeout=STARTUP_TIMEOUT)
                    await asyncio.to_thread(
                        _wait_started, var_dir / "api.log", api_workers, STARTUP_TIMEOUT
                    )
                except TimeoutError:
                    log = (var_dir / "api.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"the API did not become healthy; its log:\n{log}") from None
                yield Stack(
                    api_url,
                    key,
                    f"bench@{domain}",
                    "sink.test",
                    sink,
                    settings,
                    processes[0].pid,
                    [process.pid for process in processes[1:]],
                )
            finally:
                await _stop(processes)
                if log_dir is not None:
                    await asyncio.to_thread(_copy_logs, var_dir, log_dir)
                if server is not None:
                    server.close()
                    await server.wait_closed()
                stop_embedded_redis()
                if postgres_url:
                    await drop_test_database(postgres_url, database_url)
