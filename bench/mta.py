"""Postfix's smtp-sink, smtp-source and a throwaway Postfix instance, for the baselines.

Everything runs from temporary directories and stops when its block ends; the machine's own
Postfix configuration is never touched. Needs the Debian `postfix` package.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_COUNTER = re.compile(rb"mesg=(\d+)")
POSTFIX_LIBEXEC = Path("/usr/lib/postfix/sbin")
QUEUE_DIRS = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
              "private", "saved", "trace")  # fmt: skip


def require_postfix_tools() -> None:
    """Fail early, saying what to install."""
    missing = [tool for tool in ("smtp-sink", "smtp-source") if shutil.which(tool) is None]
    if missing or not (POSTFIX_LIBEXEC / "master").exists():
        raise SystemExit("the baselines need Debian's postfix package: apt-get install postfix")


class Sink:
    """smtp-sink on host:port, with a live count of the messages it has accepted."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.count = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Sink:
        self._process = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-c", f"{self.host}:{self.port}", "1024"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for_port(self.host, self.port)
        return self

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        buffer = b""
        fd = self._process.stdout.fileno()
        while chunk := os.read(fd, 4096):
            buffer = (buffer + chunk)[-200:]
            counts = _COUNTER.findall(buffer)
            if counts:
                self.count = int(counts[-1])

    def wait_for(self, count: int, timeout: float = 600) -> float:
        """Block until `count` messages arrived; returns the time.perf_counter() then."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sink got {self.count} of {count} messages")
            time.sleep(0.005)
        return time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()


def wait_for_port(host: str, port: int, timeout: float = 10) -> None:
    """Until something listens on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def smtp_source(port: int, messages: int, *, sessions: int = 20, size: int = 2000) -> None:
    """Inject `messages` messages of `size` bytes over `sessions` parallel sessions."""
    subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
         "-f", "bench@bench.test", "-t", "user@sink.test", f"127.0.0.1:{port}"],
        check=True,
    )  # fmt: skip


@contextlib.contextmanager
def syslog_socket() -> Iterator[None]:
    """Postfix's master exits when /dev/log is missing (containers): provide a discarding one."""
    if os.path.exists("/dev/log"):
        yield
        return
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("/dev/log")
    stop = threading.Event()

    def drain() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                server.recv(65536)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        server.close()
        os.unlink("/dev/log")


def _main_cf(root: Path, relay_port: int) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.columba.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
default_destination_concurrency_limit = 20
smtp_tls_security_level = none
smtpd_tls_security_level = none
"""


def _prepare(root: Path, smtpd_port: int, relay_port: int) -> None:
    """Config and queue directories of a private Postfix instance."""
    etc, queue = root / "etc", root / "queue"
    etc.mkdir()
    (root / "data").mkdir()
    (etc / "main.cf").write_text(_main_cf(root, relay_port))
    master = Path("/etc/postfix/master.cf").read_text()
    master = re.sub(
        r"^smtp\s+inet\s+.*smtpd$",
        f"127.0.0.1:{smtpd_port} inet n - n - - smtpd",
        master,
        flags=re.MULTILINE,
    )
    (etc / "master.cf").write_text(master)
    for name in QUEUE_DIRS:
        (queue / name).mkdir(parents=True)
        shutil.chown(queue / name, user="postfix")
        (queue / name).chmod(0o700)
    (queue / "pid").mkdir()
    for name, mode in (("public", 0o710), ("maildrop", 0o730)):
        (queue / name).mkdir()
        shutil.chown(queue / name, user="postfix", group="postdrop")
        (queue / name).chmod(mode)
    shutil.chown(root / "data", user="postfix")


@contextlib.contextmanager
def postfix(smtpd_port: int, relay_port: int) -> Iterator[int]:
    """A Postfix instance: smtpd on 127.0.0.1:smtpd_port relaying everything to relay_port;
    yields its master's process id (its daemons are the master's children)."""
    with tempfile.TemporaryDirectory(prefix="columba-postfix-") as tmp, syslog_socket():
        root = Path(tmp)
        root.chmod(0o755)
        _prepare(root, smtpd_port, relay_port)
        master = subprocess.Popen([str(POSTFIX_LIBEXEC / "master"), "-c", str(root / "etc"), "-d"])
        try:
            wait_for_port("127.0.0.1", smtpd_port)
            yield master.pid
        finally:
            master.terminate()
            master.wait(timeout=30)
