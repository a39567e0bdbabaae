"""Worker benchmark (issue 11): CPU per message of one `columba worker` process, and its peak
RSS with a large queue.

Everything else (the API process, PostgreSQL, Redis, the fake DNS server, Postfix's smtp-sink
as the recipients' MX) runs beside it; only the worker's own CPU is counted, read from
/proc/<pid>/stat. Phases, in one run:

  idle      the worker's CPU per second with nothing to do (its cron jobs, its polls)
  trickle   single-recipient messages POSTed one at a time at --rate per second
  backlog   --backlog single-recipient messages accepted while the worker is stopped
            (SIGSTOP), then delivered in one go (SIGCONT)
  memory    --memory recipients (personalizations of 1,000 per /v3/mail/send request,
            each its own copy) queued while the worker is stopped, then delivered; peak RSS

--src runs the API and the worker from another source tree (the same database schema), so
that a baseline commit is measured in the same session: `git archive BASE | tar -x -C DIR`.

  python -m bench.worker --postgres URL --redis URL [--rate 50] [--trickle 500]
      [--backlog 3000] [--memory 100000] [--src DIR] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import func, select

from app.core import migrate
from app.core.config import Settings
from app.core.db import Database
from app.messages.models import Recipient
from bench.mta import Sink
from bench.stack import _environment, _provision, _wait_healthy
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import free_port
from tests.support import create_test_database, drop_test_database

ROOT = Path(__file__).resolve().parent.parent
SINK_HOST = "127.0.0.2"
DOMAIN = "sink.test"
TEXT = "Hello from the Columba worker benchmark. " * 22  # ~1 KB
HTML = "<p>" + "Hello from the <b>Columba</b> worker benchmark. " * 16 + "</p>"
CONCURRENCY = 20
PER_REQUEST = 1000  # personalizations per request in the memory phase
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Where the profile's samples are attributed (substring of a frame → label), inclusive.
PROFILE_LABELS = {
    "claim": "dispatch.py:claim",
    "record outcomes": "record_outcomes",
    "compose + sign": "compose.py",
    "DKIM signing": "signing.py",
    "SMTP (aiosmtplib)": "aiosmtplib",
    "SQLAlchemy": "sqlalchemy",
    "asyncpg": "asyncpg",
    "redis-py": "redis/",
    "arq": "arq/",
}


@dataclass
class Bench:
    """A running worker with an API to feed it."""

    api_url: str
    key: str
    sender: str
    settings: Settings
    worker: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.worker.pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def _spawn(src: Path, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A `columba` process run from the source tree `src`."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--log-level", "WARNING", *args],
        env=env | {"PYTHONPATH": str(src)},
        cwd=src,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


@contextlib.asynccontextmanager
async def running(args: argparse.Namespace) -> AsyncIterator[Bench]:
    """Database, DNS, smtp-sink, API and one worker; all stopped when the block ends."""
    src = Path(args.src)
    database_url = await create_test_database(
        args.postgres, "columba_wbench_" + secrets.token_hex(4)
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.to_thread(migrate.upgrade, database_url)
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="columba-wbench-") as tmp, Sink(SINK_HOST, port):
            async with FakeDNS() as dns_server:
                dns_server.add_mx(DOMAIN, (10, "mx." + DOMAIN))
                dns_server.add_a("mx." + DOMAIN, SINK_HOST)
                settings = Settings(
                    database_url=database_url,
                    redis_url=args.redis,
                    secret_key="bench-secret-" + "b" * 40,
                    hostname="bench.columba.test",
                    dns_nameservers=(dns_server.nameserver,),
                    mx_port=port,
                    var_dir=Path(tmp),
                )
                key, domain = await _provision(settings)
                env = _environment(settings) | {
                    "COLUMBA_RATE_LIMIT": "off",
                    # On a loaded machine the fake DNS server (in this process) answers
                    # late: wait for it, and retry a deferral at once rather than in 5m.
                    "COLUMBA_DNS_TIMEOUT": "30s",
                    "COLUMBA_RETRY_SCHEDULE": "1s",
                }
                api_port = free_port()
                processes.append(
                    _spawn(src, ["api", "--port", str(api_port)], env, Path(tmp) / "api.log")
                )
                worker = _spawn(src, ["worker"], env, Path(tmp) / "worker.log")
                processes.append(worker)
                api_url = f"http://127.0.0.1:{api_port}"
                await _wait_healthy(api_url, timeout=180)
                await asyncio.sleep(5)  # the worker's imports and startup are not measured
                yield Bench(api_url, key, f"bench@{domain}", settings, worker)
                for process in processes:
                    process.send_signal(signal.SIGCONT)
                    process.terminate()
                for process in processes:
                    await asyncio.to_thread(process.wait, 30)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        await drop_test_database(args.postgres, database_url)


async def delivered(database: Database) -> int:
    """Recipients whose delivery is recorded."""
    async with database.session() as session:
        query = select(func.count()).select_from(Recipient).where(Recipient.status == "delivered")
        return int(await session.scalar(query) or 0)


async def wait_delivered(database: Database, count: int, timeout: float = 1800) -> None:
    """Until `count` recipients are delivered."""
    async with asyncio.timeout(timeout):
        while await delivered(database) < count:  # noqa: ASYNC110 (polling the database)
            await asyncio.sleep(0.05)


def single(bench: Bench, index: int, label: str) -> dict[str, object]:
    """A ~2 KB single-recipient message."""
    to = [f"{label}{index}@{DOMAIN}"]
    return {"from": bench.sender, "to": to, "subject": label, "text": TEXT, "html": HTML}


def personalized(bench: Bench, start: int) -> dict[str, object]:
    """A SendGrid request with PER_REQUEST personalizations, each its own copy."""
    return {
        "personalizations": [
            {"to": [{"email": f"m{start + i}@{DOMAIN}"}], "substitutions": {"-n-": str(i)}}
            for i in range(PER_REQUEST)
        ],
        "from": {"email": bench.sender},
        "subject": "memory -n-",
        "content": [{"type": "text/plain", "value": TEXT + " -n-"}],
    }


async def post(http: httpx.AsyncClient, path: str, body: dict[str, object]) -> None:
    """One accepted request (sent again once if a kept-alive connection was closed under it,
    which an overloaded machine makes likely)."""
    try:
        response = await http.post(path, json=body)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        response = await http.post(path, json=body)
    if response.status_code != 202:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")


async def post_many(bench: Bench, path: str, bodies: list[dict[str, object]]) -> None:
    """Every body, CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)
    async with _client(bench) as http:

        async def one(body: dict[str, object]) -> None:
            async with gate:
                await post(http, path, body)

        await asyncio.gather(*(one(body) for body in bodies))


def _client(bench: Bench) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {bench.key}"}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    return httpx.AsyncClient(base_url=bench.api_url, headers=headers, limits=limits, timeout=300)


@contextlib.contextmanager
def profiled(bench: Bench, directory: str | None, phase: str) -> Iterator[None]:
    """py-spy sampling the worker for the duration of the block (raw collapsed stacks)."""
    if directory is None:
        yield
        return
    out = Path(directory) / f"worker-{phase}.txt"
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--nonblocking",
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
            "-p",
            str(bench.pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        print(f"  profile {out}: " + summarize(out))


def summarize(path: Path) -> str:
    """Inclusive share of the samples per label of PROFILE_LABELS."""
    if not path.exists():
        return "(no samples)"
    shares: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for label, needle in PROFILE_LABELS.items():
            if needle in stack:
                shares[label] += int(count)
    if not total:
        return "(no samples)"
    return ", ".join(f"{label} {100 * n / total:.0f}%" for label, n in shares.most_common())


async def idle(bench: Bench, seconds: float = 5) -> float:
    """CPU seconds per second of an idle worker."""
    before = cpu_seconds(bench.pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(bench.pid) - before) / seconds


async def trickle(bench: Bench, database: Database, count: int, rate: float) -> float:
    """Worker CPU milliseconds per message when messages arrive one at a time."""
    already = await delivered(database)
    before = cpu_seconds(bench.pid)
    async with _client(bench) as http:
        start = time.perf_counter()
        tasks = []
        for index in range(count):
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(post(http, "/v1/send", single(bench, index, "t"))))
        await asyncio.gather(*tasks)
    await wait_delivered(database, already + count)
    return (cpu_seconds(bench.pid) - before) * 1000 / count


async def backlog(bench: Bench, database: Database, count: int) -> tuple[float, float]:
    """Worker CPU milliseconds per message draining a backlog, and messages per second."""
    already = await delivered(database)
    bench.worker.send_signal(signal.SIGSTOP)
    await post_many(bench, "/v1/send", [single(bench, i, "b") for i in range(count)])
    before, started = cpu_seconds(bench.pid), time.perf_counter()
    bench.worker.send_signal(signal.SIGCONT)
    await wait_delivered(database, already + count)
    seconds = time.perf_counter() - started
    return (cpu_seconds(bench.pid) - before) * 1000 / count, count / seconds


async def memory(bench: Bench, database: Database, count: int, seconds: float) -> dict[str, float]:
    """Peak RSS of the worker while `count` queued recipients are delivered (for at most
    `seconds`): MB before, now and at the peak, how many were delivered and in how long."""
    already = await delivered(database)
    bench.worker.send_signal(signal.SIGSTOP)
    bodies = [personalized(bench, start) for start in range(0, count, PER_REQUEST)]
    await post_many(bench, "/v3/mail/send", bodies)
    rss_before = memory_kb(bench.pid)["VmRSS"]
    started = time.perf_counter()
    bench.worker.send_signal(signal.SIGCONT)
    done = already
    while time.perf_counter() - started < seconds and done < already + count:
        await asyncio.sleep(1)
        done = await delivered(database)
    figures = memory_kb(bench.pid)
    return {
        "queued": count,
        "rss_before_mb": rss_before / 1024,
        "rss_mb": figures["VmRSS"] / 1024,
        "peak_rss_mb": figures["VmHWM"] / 1024,
        "delivered": done - already,
        "seconds": time.perf_counter() - started,
    }


def describe_memory(figures: dict[str, float]) -> str:
    """One line for memory()'s figures."""
    return (
        f"{figures['queued']:.0f} queued: RSS before {figures['rss_before_mb']:.0f} MB, now "
        f"{figures['rss_mb']:.0f} MB, peak {figures['peak_rss_mb']:.0f} MB; "
        f"{figures['delivered']:.0f} delivered in {figures['seconds']:.0f} s"
    )


async def run(args: argparse.Namespace) -> None:
    """Every phase asked for, in order, against one worker."""
    async with running(args) as bench:
        database = Database(bench.settings)
        try:
            print(f"source {args.src}, load {os.getloadavg()[0]:.2f}")
            print(f"  idle: {await idle(bench) * 1000:.1f} ms CPU per second")
            if args.trickle:
                with profiled(bench, args.profile, "trickle"):
                    per = await trickle(bench, database, args.trickle, args.rate)
                print(f"  trickle ({args.trickle} at {args.rate}/s): {per:.2f} ms CPU/message")
            if args.backlog:
                with profiled(bench, args.profile, "backlog"):
                    per, rate = await backlog(bench, database, args.backlog)
                print(f"  backlog ({args.backlog}): {per:.2f} ms CPU/message, {rate:.0f} msg/s")
            if args.memory:
                figures = await memory(bench, database, args.memory, args.seconds)
                print("  memory: " + describe_memory(figures))
            print(f"  load {os.getloadavg()[0]:.2f}")
        finally:
            await database.dispose()


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--rate", type=float, default=50.0, help="trickle: messages per second")
    parser.add_argument("--trickle", type=int, default=500, help="trickle: messages (0: skip)")
    parser.add_argument("--backlog", type=int, default=3000, help="backlog: messages (0: skip)")
    parser.add_argument("--memory", type=int, default=0, help="memory: recipients (0: skip)")
    parser.add_argument("--seconds", type=float, default=1800, help="memory: longest wait")
    parser.add_argument("--src", default=str(ROOT), help="source tree of the API and worker")
    parser.add_argument("--profile", default=None, help="directory for py-spy profiles")
    args = parser.parse_args()
    args.src = str(Path(args.src).resolve())
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
