"""`columba dev`: the whole service in one process on the embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from app.accounts import service as accounts
from app.bounces.inbound import start_inbound
from app.core import migrate
from app.core.config import Settings, load_settings
from app.core.db import SQLITE_SIDE_FILES, Database, sqlite_path
from app.dashboard.sessions import SIGNIN_LINK_LIFETIME
from app.dev.embedded_redis import redis_url_for, stop_embedded_redis
from app.dev.mailbox import start_capture_server
from app.domains import service as domains
from app.events.waiting import LongPolls
from app.main import create_app, proxy_options
from app.submission.server import SubmissionServer
from app.submission.tls import context_from_settings, ensure_dev_certificate
from worker.settings import build_worker

if TYPE_CHECKING:
    from arq.worker import Worker

DEV_ACCOUNT = "dev"
DEV_DOMAIN = "columba.test"
# What work in flight gets once Ctrl-C or SIGTERM arrives: requests, submissions being stored,
# deliveries (long polls answer at once). Idle, everything stops within a second or two.
SHUTDOWN_GRACE_SECONDS = 5
SIGNIN_MINUTES = int(SIGNIN_LINK_LIFETIME.total_seconds() // 60)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: `columba dev` handles Ctrl-C for everything."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _secret_key(var_dir: Path) -> str:
    """A secret key kept under var/, made on first start."""
    path = var_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def dev_settings(smtp_port: int, public_url: str = "http://127.0.0.1:8000") -> Settings:
    """Embedded defaults; anything set in the environment still wins. Links in mail (tracking,
    unsubscribe) point at this dev server unless COLUMBA_PUBLIC_URL says otherwise."""
    var_dir = Path(os.environ.get("COLUMBA_VAR_DIR", "./var"))
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    defaults: dict[str, object] = {
        "dev_mode": True,
        "secret_key": _secret_key(var_dir),
        "relay_url": f"smtp://127.0.0.1:{smtp_port}",
        "require_verified_domains": False,
        "allow_private_destinations": True,
        "hostname": "localhost",
        "public_url": public_url,
    }
    if "COLUMBA_SMTP_TLS_CERT" not in os.environ:
        # A self-signed certificate for the submission listener (clients must not verify it).
        cert, key = ensure_dev_certificate(var_dir / "tls", "localhost")
        defaults |= {"smtp_tls_cert": cert, "smtp_tls_key": key}
    chosen = {k: v for k, v in defaults.items() if f"COLUMBA_{k.upper()}" not in os.environ}
    return load_settings(**chosen)


async def _dev_key(settings: Settings) -> str:
    """The dev account's key: saved under var/ (dev only), created with its domain if new."""
    path = settings.var_dir / "dev-api-key"
    database = Database(settings)
    try:
        async with database.session() as session:
            if path.exists():
                saved = path.read_text().strip()
                if await accounts.authenticate(session, plaintext=saved) is not None:
                    return saved
            account = await accounts.get_or_create_account(session, name=DEV_ACCOUNT)
            if await domains.get_domain(session, account_id=account.id, name=DEV_DOMAIN) is None:
                await domains.add_domain(
                    session,
                    account=account,
                    name=DEV_DOMAIN,
                    secret_key=settings.secret_key_bytes(),
                )
            issued = await accounts.create_key(session, account=account, name="dev", scopes=None)
            await session.commit()
    finally:
        await database.dispose()
    path.write_text(issued.plaintext + "\n")
    path.chmod(0o600)
    return issued.plaintext


def signin_link(app: FastAPI, key: str, base: str) -> str:
    """A one-time dashboard sign-in link for the dev key (single use, expires in minutes)."""
    parts = accounts.split_key(key)
    assert parts is not None, "the dev key is one of ours"
    return f"{base}/dashboard/signin/{app.state.signin_links.issue(parts[0])}"


def _banner(
    key: str,
    host: str,
    port: int,
    mailbox: Path,
    submission: dict[str, int],
    inbound_port: int,
    public_url: str,
    signin: str,
) -> str:
    body = (
        '{"from": "hello@' + DEV_DOMAIN + '", "to": ["you@example.test"], '
        '"subject": "Hello from Columba", "text": "It works."}'
    )
    curl = (
        f"curl -s -X POST http://{host}:{port}/v1/send "
        f"-H {shlex.quote('Authorization: Bearer ' + key)} "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
    swaks = (
        f"swaks --server 127.0.0.1:{submission['starttls']} --tls --auth PLAIN "
        f"--auth-user apikey --auth-password {shlex.quote(key)} "
        f"--from hello@{DEV_DOMAIN} --to you@example.test"
    )
    return (
        f"\nColumba dev is running on http://{host}:{port}  (Ctrl-C stops everything)\n"
        f"  API key (account {DEV_ACCOUNT!r}, domain {DEV_DOMAIN}): {key}\n"
        f"  Dashboard: http://{host}:{port}/dashboard  (mail captured, stats, activity)\n"
        f"    one-time sign-in link (valid {SIGNIN_MINUTES} minutes): {signin}\n"
        f"  SMTP submission on 127.0.0.1:{submission['starttls']} (STARTTLS) and "
        f"127.0.0.1:{submission['tls']} (TLS), self-signed certificate;\n"
        "    user name `apikey`, password: the API key\n"
        f"  Every message is captured under {mailbox}/ (browse it in the dashboard's Mailbox;\n"
        f"    links in it, tracking and unsubscribe, point at {public_url})\n"
        f"  Bounces and complaints: columba inbound on 127.0.0.1:{inbound_port}; send a DSN to a\n"
        "    captured message's Return-Path and see it in GET /v1/inbound\n\n"
        f"Try:\n  {curl}\n  {swaks}\n"
    )


async def _serve(
    settings: Settings,
    host: str,
    port: int,
    smtp_port: int,
    submission_ports: tuple[int, int],
    inbound_port: int,
) -> None:
    """Start capture SMTP, submission, inbound, worker and API; stop them all on SIGINT/SIGTERM."""
    redis_url = redis_url_for(settings.redis_url, settings.var_dir)
    key = await _dev_key(settings)
    mailbox = settings.var_dir / "mailbox"
    capture = await start_capture_server(mailbox, "127.0.0.1", smtp_port)
    submission = SubmissionServer(settings, context_from_settings(settings))
    await submission.start("127.0.0.1", port=submission_ports[0], tls_port=submission_ports[1])
    inbound_db = Database(settings)
    inbound = await start_inbound(settings, inbound_db, host="127.0.0.1", port=inbound_port)
    inbound_port = inbound.sockets[0].getsockname()[1]
    worker = build_worker(settings, redis_url, handle_signals=False)
    app = create_app(settings)
    server = _EmbeddedServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            **proxy_options(settings),
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    worker_task = asyncio.create_task(worker.main())
    server_task = asyncio.create_task(server.serve())
    await asyncio.sleep(0.5)
    signin = signin_link(app, key, f"http://{host}:{port}")
    banner = _banner(
        key, host, port, mailbox, submission.ports, inbound_port, settings.public_url, signin
    )
    print(banner, flush=True)
    await stop.wait()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _exit_now)
    print("\nstopping… (again to stop at once)", flush=True)
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE_SECONDS + 5):
            await asyncio.gather(
                _stop_api(server, app, server_task),
                submission.close(grace=SHUTDOWN_GRACE_SECONDS),
                _stop_worker(worker, worker_task),
            )
    except TimeoutError:
        print("gave up waiting for work in flight", flush=True)
    capture.close()
    await capture.wait_closed()
    inbound.close()
    await inbound.wait_closed()
    await inbound_db.dispose()


async def _stop_api(server: uvicorn.Server, app: FastAPI, task: asyncio.Task[None]) -> None:
    """Stop accepting requests; long polls answer at once, other requests in flight get
    SHUTDOWN_GRACE_SECONDS before they are cut."""
    polls: LongPolls | None = getattr(app.state, "long_polls", None)  # None: not started yet
    if polls is not None:
        polls.stop()
    server.should_exit = True
    await task


async def _stop_worker(worker: Worker, task: asyncio.Task[None]) -> None:
    """Stop picking jobs first, then cancel the running ones and close the worker (its pump
    finishes the deliveries in flight, within the grace period)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    try:
        await worker.close()
    except asyncio.CancelledError:
        # arq's close() gathers the job tasks it has just cancelled (a periodic job that was
        # running): their CancelledError is theirs, not ours, unless this task is the one
        # being cancelled. (It made `columba dev` exit 1 on SIGTERM now and then.)
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


def _exit_now() -> None:
    """A second Ctrl-C or SIGTERM: stop the embedded Redis (if this is its last user), exit."""
    print("stopping at once", flush=True)
    stop_embedded_redis()
    os._exit(1)


def private_database(settings: Settings) -> None:
    """The SQLite file and its -wal/-shm/-journal readable by this user only, like the keys
    under var/ (SQLite gives new -wal and -shm files the database file's permissions)."""
    path = sqlite_path(settings.database_url) if settings.is_sqlite else None
    if path is None:
        return
    for name in (path.name, *(path.name + suffix for suffix in SQLITE_SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            (path.parent / name).chmod(0o600)


def run_dev(
    *,
    host: str,
    port: int,
    smtp_port: int,
    submission_ports: tuple[int, int],
    inbound_port: int = 2526,
) -> None:
    """Migrate, then run everything until Ctrl-C."""
    # A wildcard listen address is no address to put in a link: loopback reaches it.
    link_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    link_host = f"[{link_host}]" if ":" in link_host else link_host  # RFC 3986 §3.2.2
    settings = dev_settings(smtp_port, f"http://{link_host}:{port}")
    private_database(settings)
    migrate.upgrade(settings.database_url)
    try:
        asyncio.run(_serve(settings, host, port, smtp_port, submission_ports, inbound_port))
    finally:
        stop_embedded_redis()
