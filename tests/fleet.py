"""Named `columba` processes (API, workers, the SMTP listener) that a test starts, kills with
SIGKILL at a moment of its choosing, and starts again, each with its log kept for a failure."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Member:
    """One process of the fleet: its command, and every incarnation's log."""

    name: str
    args: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    _log_file: IO[bytes] | None = None


class Fleet:
    """`python -m app.cli …` processes sharing one environment."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.members: dict[str, Member] = {}
        self.kills: list[tuple[str, float]] = []  # (name, monotonic time) of each SIGKILL

    def start(self, name: str, *args: str) -> Member:
        """Start (or start again) the process called `name`."""
        member = self.members.setdefault(name, Member(name, args))
        log_path = self.logs / f"{name}.{len(member.logs)}.log"
        member.logs.append(log_path)
        member._log_file = log_path.open("wb")
        member.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "--log-level", "WARNING", *member.args],
            env=self.env,
            cwd=ROOT,
            stdout=member._log_file,
            stderr=subprocess.STDOUT,
        )
        return member

    async def kill(self, name: str) -> None:
        """SIGKILL the process and wait until it is gone."""
        member = self.members[name]
        assert member.process is not None
        assert member.process.poll() is None, f"{name} died before its kill"
        member.process.send_signal(signal.SIGKILL)
        self.kills.append((name, time.monotonic()))
        await asyncio.to_thread(member.process.wait)
        self._close_log(member)

    def died(self) -> list[str]:
        """Processes that exited without being killed by the test (a crash)."""
        return [
            f"{m.name} (exit {m.process.returncode})"
            for m in self.members.values()
            if m.process is not None and m.process.poll() is not None
        ]

    async def stop_all(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) every process still running, SIGKILL after 20 s; waits in
        threads so the test's loop keeps serving the MX, DNS and webhook receiver."""
        running = [m for m in self.members.values() if m.process and m.process.poll() is None]
        for member in running:
            assert member.process is not None
            member.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        for member in running:
            assert member.process is not None
            try:
                await asyncio.to_thread(member.process.wait, 20)
            except subprocess.TimeoutExpired:
                member.process.kill()
                await asyncio.to_thread(member.process.wait)
        for member in self.members.values():
            self._close_log(member)

    def print_logs(self, characters: int = 6000) -> None:
        """Each log's end (pytest shows this output when the test fails)."""
        for member in self.members.values():
            for path in member.logs:
                text = path.read_text(errors="replace")
                if text:
                    print(f"--- {path.name} ---\n{text[-characters:]}")

    @staticmethod
    def _close_log(member: Member) -> None:
        """Close the current incarnation's log file."""
        if member._log_file is not None:
            member._log_file.close()
            member._log_file = None


async def until_healthy(url: str, timeout: float = 120) -> None:
    """Until GET {url}/healthz answers 200."""
    async with asyncio.timeout(timeout), httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
