"""A private PgBouncer in transaction mode in front of the machine's PostgreSQL, for the tests
and the benchmarks. Its own configuration in a temporary directory and its own port: the
machine's PostgreSQL and any system PgBouncer are left alone."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.fakes.mx import free_port

# Debian installs it in /usr/sbin, which is not on every user's PATH.
PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
# The user it runs as when started by root (PgBouncer refuses to run as root).
UNPRIVILEGED_USER = "postgres"


def pgbouncer_binary() -> str | None:
    """PgBouncer's executable, or None when it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in PGBOUNCER_PATHS if os.access(path, os.X_OK)), None)


@dataclass(frozen=True)
class PgBouncer:
    """A running private PgBouncer."""

    port: int
    directory: Path

    def url_for(self, url: str) -> str:
        """`url` (a SQLAlchemy URL on the upstream server) through this PgBouncer."""
        return (
            make_url(url)
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )

    def server_connections(self, upstream_url: str) -> int:
        """Connections PgBouncer holds open to the upstream server now (from pg_stat_activity
        on the upstream, via psql: the admin console speaks only the simple protocol)."""
        url = make_url(upstream_url)
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE datname = '{url.database}' AND application_name = 'columba-pgbouncer'"
        )
        host, port = url.host or "127.0.0.1", str(url.port or 5432)
        user = url.username or "postgres"
        output = subprocess.run(
            ["psql", "-h", host, "-p", port, "-U", user, "-d", "postgres", "-tAc", query],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(output.strip())


def _config(directory: Path, upstream_url: str, port: int, pool_size: int) -> str:
    """pgbouncer.ini: every database of the upstream server, in transaction mode."""
    upstream = make_url(upstream_url)
    host, upstream_port = upstream.host or "127.0.0.1", upstream.port or 5432
    user = upstream.username or "postgres"
    return f"""[databases]
* = host={host} port={upstream_port} user={user} application_name=columba-pgbouncer

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 2000
max_db_connections = {pool_size}
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
ignore_startup_parameters = extra_float_digits
"""


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until PgBouncer accepts connections (or it died: its log in the error)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"PgBouncer did not start; its log:\n{text}")


@contextlib.contextmanager
def private_pgbouncer(upstream_url: str, *, pool_size: int = 10) -> Iterator[PgBouncer]:
    """Run a PgBouncer (transaction mode, `pool_size` server connections per database and
    in all) until the block ends."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("PgBouncer is not installed (apt-get install pgbouncer)")
    with tempfile.TemporaryDirectory(prefix="columba-pgbouncer-") as tmp:
        directory = Path(tmp)
        directory.chmod(0o777)  # PgBouncer writes its log and pid file as its own user
        port = free_port()
        user = make_url(upstream_url).username or "postgres"
        (directory / "userlist.txt").write_text(f'"{user}" ""\n')
        config = directory / "pgbouncer.ini"
        config.write_text(_config(directory, upstream_url, port, pool_size))
        command = [binary, "-q", str(config)]
        if os.geteuid() == 0:
            command = ["runuser", "-u", UNPRIVILEGED_USER, "--", *command]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_listening(port, process, directory / "pgbouncer.log")
            yield PgBouncer(port, directory)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
