"""A rolling deploy under load: two `columba api`, two `columba worker` and one `columba smtp`
process share the test database and Redis; while sends arrive steadily (over HTTP through a
load balancer, and by SMTP submission), each process in turn gets SIGTERM, exits, and is
replaced. Every send answered 202 or 250 is delivered, each copy exactly once; no client
sees an error, save the 421 a new SMTP session gets while the listener stops, which it
retries on as an MTA would. (It costs about 65 CPU-seconds, most of them the ten process
starts: 68 s in all on SQLite with the 2-core machine at load 7, 185 s on PostgreSQL at load
12.)"""

from __future__ import annotations

import asyncio
import contextlib
import email
import itertools
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiosmtplib
import httpx
import pytest
import pytest_asyncio
import trustme
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database
from app.messages.models import Recipient
from tests.fakes.mx import ScriptedMX, free_port
from tests.support import Sender
from tests.test_crash import ROOT, worker_env

pytestmark = pytest.mark.make_test_only

GRACE = "5s"
API_EVERY = 0.15  # seconds between sends over HTTP
SMTP_EVERY = 0.3  # seconds between SMTP submissions
READY_SECONDS = 90
RETRY_PAUSE = 0.2  # what a client waits before trying again (another API, or a new session)


@dataclass
class Process:
    """One long-running `columba` command, restartable on the same port."""

    name: str
    args: list[str]
    ready_url: str | None  # GET it until 200; None: an SMTP greeting on `port`
    port: int
    env: dict[str, str]
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    exit_codes: list[int] = field(default_factory=list)
    _log_files: list[IO[bytes]] = field(default_factory=list)

    def start(self) -> None:
        """Start it (a log file per run)."""
        log = (self.logs / f"{self.name}-{len(self._log_files)}.log").open("wb")
        self._log_files.append(log)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "--log-level", "WARNING", *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self) -> None:
        """Until it serves (a start takes seconds of imports, more on a busy machine)."""
        async with asyncio.timeout(READY_SECONDS):
            while not await self._serves():  # noqa: ASYNC110 (polling a port)
                await asyncio.sleep(0.1)

    async def _serves(self) -> bool:
        """Whether it answers: GET /healthz 200, or an SMTP greeting."""
        if self.ready_url is None:
            return await _greets(self.port)
        async with httpx.AsyncClient() as http:
            try:
                return (await http.get(f"{self.ready_url}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

    async def stop(self) -> int:
        """SIGTERM, and its exit status once it is gone (the loop keeps serving the MX)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(asyncio.to_thread(self.process.wait), 30)
        self.exit_codes.append(code)
        return code

    def kill(self) -> None:
        """After the test: whatever still runs ends now; its logs are shown on failure."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for log in self._log_files:
            log.close()
        for path in sorted(self.logs.glob(f"{self.name}-*.log")):
            text = path.read_text(errors="replace")
            if text:
                print(f"--- {path.name} ---\n{text[-5000:]}")


async def _greets(port: int) -> bool:
    """Whether an SMTP server on `port` says 220."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return line.startswith(b"220 ")


@dataclass
class Load:
    """What the clients sent, and every error they saw."""

    accepted: list[str] = field(default_factory=list)  # recipients answered 202 or 250
    errors: list[str] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)  # why a client tried again
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class Balancer:
    """A load balancer over the API processes: round robin over those in service; a refused
    connection is tried on the next one (what nginx's proxy_next_upstream does)."""

    def __init__(self, apis: list[Process]) -> None:
        self.apis = apis
        self.in_service = {api.name for api in apis}
        self._turn = itertools.cycle(apis)

    async def post(self, http: httpx.AsyncClient, path: str, **kwargs: object) -> httpx.Response:
        """POST to the next API in service."""
        for _ in range(50):
            api = next(self._turn)
            if api.name not in self.in_service:
                continue
            try:
                return await http.post(f"http://127.0.0.1:{api.port}{path}", **kwargs)  # type: ignore[arg-type]
            except httpx.ConnectError:
                await asyncio.sleep(RETRY_PAUSE / 4)
        raise AssertionError("no API process would take the request")


async def send_over_http(balancer: Balancer, sender: Sender, load: Load) -> None:
    """One message every API_EVERY seconds, until told to stop."""
    async with httpx.AsyncClient(timeout=30) as http:
        for index in itertools.count():
            if load.stop.is_set():
                return
            to = f"http{index}@example.test"
            body = {"from": sender.address(), "to": [to], "subject": "rolling", "text": "x"}
            try:
                response = await balancer.post(http, "/v1/send", json=body, headers=sender.headers)
            except httpx.HTTPError as exc:
                load.errors.append(f"HTTP {to}: {exc!r}")
            else:
                if response.status_code == 202:
                    load.accepted.append(to)
                else:
                    load.errors.append(f"HTTP {to}: {response.status_code} {response.text}")
            await asyncio.sleep(API_EVERY)


async def send_over_smtp(port: int, tls: ssl.SSLContext, sender: Sender, load: Load) -> None:
    """One message every SMTP_EVERY seconds, each retried as an MTA would retry it."""
    for index in itertools.count():
        if load.stop.is_set():
            return
        to = f"smtp{index}@example.test"
        data = (
            f"From: {sender.address()}\r\nTo: {to}\r\nSubject: rolling\r\n"
            f"Message-ID: <smtp{index}@client.test>\r\n\r\nx\r\n"
        ).encode()
        async with asyncio.timeout(60):
            while not await submit(port, tls, sender, to, data, load):  # noqa: ASYNC110
                await asyncio.sleep(RETRY_PAUSE)
        await asyncio.sleep(SMTP_EVERY)


async def submit(
    port: int, tls: ssl.SSLContext, sender: Sender, to: str, data: bytes, load: Load
) -> bool:
    """One session; True once the message is accepted (or refused for good: an error)."""
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, tls_context=tls, start_tls=False, timeout=10
    )
    try:
        await client.connect()
    except aiosmtplib.SMTPConnectResponseError as exc:
        if exc.code == 421:  # the listener is stopping: a new session is turned away
            load.retries["421 at the greeting"] += 1
            return False
        load.errors.append(f"SMTP {to}: greeting {exc.code} {exc.message}")
        return True
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
        # No session yet (refused, or closed before a greeting): nothing was sent.
        load.retries[f"not connected: {type(exc).__name__}"] += 1
        return False
    try:
        await client.starttls()
        await client.login("apikey", sender.key)
        await client.sendmail(sender.address(), [to], data)
    except aiosmtplib.SMTPException as exc:
        load.errors.append(f"SMTP {to}: {exc!r}")
        return True
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
    load.accepted.append(to)
    return True


@pytest_asyncio.fixture
async def fleet(
    settings: Settings, tmp_path: Path, mx: ScriptedMX
) -> AsyncIterator[dict[str, Process]]:
    """The five processes, started and ready; all ended after the test."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = worker_env(settings) | {
        "COLUMBA_SHUTDOWN_GRACE": GRACE,
        "COLUMBA_SMTP_TLS_CERT": str(cert),
        "COLUMBA_SMTP_TLS_KEY": str(key),
        "COLUMBA_DB_POOL_SIZE": "3",  # five processes on the machine's PostgreSQL
        "COLUMBA_DB_MAX_OVERFLOW": "2",
    }

    def process(name: str) -> Process:
        port = free_port()
        url: str | None = f"http://127.0.0.1:{port}"  # /healthz: the API's, or a worker's
        if name.startswith("api"):
            args = ["api", "--port", str(port)]
        elif name.startswith("worker"):
            args = ["worker", "--metrics-port", str(port)]
        else:
            args, url = ["smtp", "--port", str(port), "--tls-port", "0"], None
        return Process(name, args, url, port, env, tmp_path)

    processes = {n: process(n) for n in ("api0", "api1", "worker0", "worker1", "smtp")}
    try:
        for each in processes.values():
            each.start()
        await asyncio.gather(*(each.ready() for each in processes.values()))
        yield processes
    finally:
        for each in processes.values():
            each.kill()


async def restart(process: Process, balancer: Balancer) -> tuple[float, float]:
    """SIGTERM, exit, start again, ready; for an API, out of the balancer meanwhile (as a
    deploy takes an instance out of its load balancer before stopping it). Returns how long
    the process took to exit, and its successor to be ready."""
    balancer.in_service.discard(process.name)
    began = time.monotonic()
    await process.stop()
    stopped = time.monotonic()
    process.start()
    await process.ready()
    if process.name.startswith("api"):
        balancer.in_service.add(process.name)
    return stopped - began, time.monotonic() - stopped


async def final_recipients(db: Database) -> dict[str, str]:
    """Every recipient's status, by address."""
    async with db.session() as session:
        rows = await session.execute(select(Recipient.email, Recipient.status))
        return {email: status for email, status in rows.all()}


# Ten process starts, each a few CPU-seconds of imports: the default 120 s timeout is not
# enough on a machine busy with other work.
@pytest.mark.timeout(300)
async def test_a_rolling_restart_under_load_loses_and_repeats_nothing(
    fleet: dict[str, Process], sender: Sender, mx: ScriptedMX, db: Database, tmp_path: Path
) -> None:
    mx.stall_at("EOD", 0.2)  # transactions last long enough to be in flight at a SIGTERM
    balancer = Balancer([fleet["api0"], fleet["api1"]])
    tls = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    load = Load()
    clients = [
        asyncio.create_task(send_over_http(balancer, sender, load)),
        asyncio.create_task(send_over_smtp(fleet["smtp"].port, tls, sender, load)),
    ]
    began = time.monotonic()
    seconds = {}
    for name in ("api0", "api1", "worker0", "worker1", "smtp"):
        await asyncio.sleep(0.5)  # let the load reach the new process
        seconds[name] = await restart(fleet[name], balancer)
    await asyncio.sleep(1)
    load.stop.set()
    await asyncio.gather(*clients)
    async with asyncio.timeout(60):
        while any(s != "delivered" for s in (await final_recipients(db)).values()):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    print(f"rolling restart under load: {time.monotonic() - began:.1f}s; "
          f"{len(load.accepted)} sends; exit after SIGTERM / next one ready: "
          + ", ".join(f"{n} {a:.1f}s/{b:.1f}s" for n, (a, b) in seconds.items())
          + f"; client retries: {dict(load.retries)}")  # fmt: skip
    assert load.errors == []
    assert len(load.accepted) >= 40  # the load ran throughout
    statuses = await final_recipients(db)
    assert {to: statuses.get(to) for to in load.accepted} == dict.fromkeys(
        load.accepted, "delivered"
    )
    copies = Counter(
        (email.message_from_bytes(m.data)["Message-ID"], to)
        for m in mx.messages
        for to in m.rcpt_tos
    )
    assert set(copies.values()) == {1}  # no copy twice
    assert sorted(to for _, to in copies) == sorted(load.accepted)
    for name in ("worker0", "worker1", "smtp"):
        assert fleet[name].exit_codes == [0], name
    for name in ("api0", "api1"):
        # uvicorn re-raises the SIGTERM it handled, once it has shut down gracefully.
        assert fleet[name].exit_codes in ([0], [-signal.SIGTERM]), name
