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
from arq.constants import health_check_key_suffix
from redis.asyncio import Redis

from app.core import migrate
from app.core.queue import QUEUE_NAME
from app.dev.embedded_redis import is_running
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


async def spawn(*args: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    """A columba command, its log (stderr) piped."""
    return await asyncio.create_subprocess_exec(
        *COLUMBA,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@asynccontextmanager
async def running(
    *args: str, env: dict[str, str], cwd: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A columba command running until the block ends (then SIGTERM, and it must exit)."""
    process = await spawn(*args, env=env, cwd=cwd)
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
    """Bad keys are limited per client address (2 an hour here). A client that says in
    X-Forwarded-For that it is someone else each time escapes that limit only when the API
    believes the header, which it does only from COLUMBA_FORWARDED_ALLOW_IPS."""
    settings = {"redis_url": redis_url, "rate_limit": "2/1h"}  # no window ends mid-test
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


def redis_servers_for(var_dir: Path) -> list[int]:
    """Live redis-server processes serving `var_dir` (their command line names its socket)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        serves = "redis-server" in command and str(var_dir.resolve()) in command
        if serves and is_running(int(proc.name)):
            found.append(int(proc.name))
    return found


def kill_servers_of(var_dir: Path) -> None:
    """After a failed test killed its processes: their embedded Redis must not outlive it."""
    for pid in redis_servers_for(var_dir):
        os.kill(pid, signal.SIGKILL)


async def read_until(stream: asyncio.StreamReader, text: str, timeout: float = 60) -> str:
    """Output lines until one contains `text`."""
    seen = ""
    async with asyncio.timeout(timeout):
        while text not in seen:
            line = (await stream.readline()).decode()
            assert line, f"the process ended before printing {text!r}:\n{seen}"
            seen += line
    return seen


async def start_api(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    """`columba api`, once it answers."""
    port = free_port()
    process = await spawn("api", "--port", str(port), env=env, cwd=cwd)
    await until_healthy(f"http://127.0.0.1:{port}")
    return process


async def start_worker(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    """`columba worker`, once it polls for jobs (its signal handlers are in place by then:
    arq writes its health-check key from its polling loop)."""
    process = await spawn("worker", env=env, cwd=cwd)
    assert process.stderr is not None
    await read_until(process.stderr, "using the embedded Redis")
    redis = Redis(unix_socket_path=str(Path(env["COLUMBA_VAR_DIR"]) / "redis.sock"))
    try:
        async with asyncio.timeout(30):
            while not await redis.exists(QUEUE_NAME + health_check_key_suffix):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    return process


async def terminate(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, and the exit status within 15 s."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        return await process.wait()


@pytest.mark.parametrize("last", ["worker", "api"])
async def test_processes_of_one_data_directory_share_one_embedded_redis(
    tmp_path: Path, last: str
) -> None:
    """Without COLUMBA_REDIS_URL, `columba api` and `columba worker` on one data directory
    use one redis-server, which outlives the first to stop and stops with the last."""
    var_dir = tmp_path / "var"
    env = await production_env(var_dir)
    api, worker = await start_api(env, tmp_path), await start_worker(env, tmp_path)
    try:
        [server] = redis_servers_for(var_dir)
        first, second = (api, worker) if last == "worker" else (worker, api)
        await terminate(first)
        assert redis_servers_for(var_dir) == [server]  # the other process still uses it
        await terminate(second)
        # uvicorn shuts down gracefully, then raises SIGTERM again to die by it.
        assert (api.returncode, worker.returncode) == (-signal.SIGTERM, 0)
    finally:
        for process in (api, worker):
            if process.returncode is None:
                process.kill()
                await process.wait()
                kill_servers_of(var_dir)
    assert redis_servers_for(var_dir) == []
    assert not is_running(server)
    assert not (var_dir / "redis.sock").exists()


@asynccontextmanager
async def dev_running(cwd: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, str]]:
    """`columba dev` in `cwd`, once its banner is out: the process, API URL and dev key.
    Killed after the block if it has not exited by then."""
    port, smtp_port, submission_port, tls_port, inbound_port = (free_port() for _ in range(5))
    process = await asyncio.create_subprocess_exec(
        *COLUMBA, "dev", "--port", str(port), "--smtp-port", str(smtp_port),
        "--submission-port", str(submission_port), "--submission-tls-port", str(tls_port),
        "--inbound-port", str(inbound_port),
        cwd=cwd, env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        await read_until(process.stdout, "swaks")
        key = (cwd / "var" / "dev-api-key").read_text().strip()
        yield process, f"http://127.0.0.1:{port}", key
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
            kill_servers_of(cwd / "var")


async def stopped_within(process: asyncio.subprocess.Process, seconds: float) -> int:
    """SIGTERM; the exit status, which must come within `seconds`."""
    assert process.stdout is not None
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(seconds):
        said = await process.stdout.read()  # what it says while stopping; keeps the pipe open
        status = await process.wait()
    if status:  # pytest shows it with the failure
        print(said.decode(errors="replace"))
    return status


async def test_dev_keeps_its_database_private_and_stops_at_once_when_idle(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    (var_dir / "columba.db").touch(mode=0o644)  # left by an earlier version: made private
    async with dev_running(tmp_path) as (process, url, key):
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post(
                "/v1/send",
                json={"from": "a@columba.test", "to": ["b@x.test"], "subject": "s", "text": "hi"},
                headers={"Authorization": f"Bearer {key}"},
            )
        assert response.status_code == 202, response.text
        async with asyncio.timeout(20):
            while not list((var_dir / "mailbox").glob("*.eml")):  # noqa: ASYNC110 (a directory)
                await asyncio.sleep(0.1)
        for name in ("columba.db", "columba.db-wal", "columba.db-shm"):
            assert (var_dir / name).stat().st_mode & 0o777 == 0o600, name
        assert await stopped_within(process, 15) == 0
    assert redis_servers_for(var_dir) == []


async def test_dev_stops_within_its_grace_period_with_work_in_flight(tmp_path: Path) -> None:
    """A long poll waiting (up to 30 s) is answered at once, and the process is gone well
    within 15 s of SIGTERM, its embedded Redis with it."""
    async with (
        dev_running(tmp_path) as (process, url, key),
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        waiting = asyncio.create_task(
            http.get(
                "/v1/events",
                params={"after": "999999", "wait": 30},
                headers={"Authorization": f"Bearer {key}"},
            )
        )
        await asyncio.sleep(1)  # the request is in and waiting
        assert not waiting.done()
        assert await stopped_within(process, 15) == 0
        answer = await waiting
    assert answer.status_code == 200
    assert answer.json()["events"] == []
    assert redis_servers_for(tmp_path / "var") == []
