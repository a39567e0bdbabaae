"""Clients for the submission tests: swaks (a real SMTP client no one here wrote) and Python's
smtplib, both verifying the listener's certificate against the test CA."""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path

from app.submission.server import SubmissionServer

QUEUED = re.compile(r"250 2\.0\.0 Ok: queued as (\w{26})")


@dataclass
class Listener:
    """A running submission listener."""

    server: SubmissionServer
    port: int  # STARTTLS (587 in production)
    tls_port: int  # implicit TLS (465 in production)
    ca_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the listener's certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def smtp(self, *, source: str | None = None, login: str | None = None) -> smtplib.SMTP:
        """An smtplib session on the STARTTLS port, encrypted, logged in when given a key.

        Blocking: call it from a thread (asyncio.to_thread) so the listener keeps running."""
        client = smtplib.SMTP(
            "127.0.0.1", self.port, source_address=(source, 0) if source else None, timeout=10
        )
        try:
            client.starttls(context=self.client_context())
            client.ehlo()
            if login is not None:
                # One mechanism only: smtplib's login() would try LOGIN after PLAIN, a second
                # failure.
                client.user, client.password = "apikey", login
                client.auth("PLAIN", client.auth_plain)
        except BaseException:
            client.close()
            raise
        return client


@dataclass
class SwaksRun:
    """What swaks printed, and its exit code (0: sent; 28: AUTH failed; 2x: refused)."""

    returncode: int
    output: str

    @property
    def message_id(self) -> str:
        """The id from the 250 reply to the end of data."""
        found = QUEUED.search(self.output)
        assert found, self.output
        return found.group(1)


async def swaks(listener: Listener, *args: str, key: str | None = None, tls: bool = True,
                implicit: bool = False) -> SwaksRun:  # fmt: skip
    """Run swaks against the listener: STARTTLS (or --tls-on-connect), AUTH PLAIN with `key`."""
    port = listener.tls_port if implicit else listener.port
    command = ["swaks", "--server", f"127.0.0.1:{port}", "--timeout", "10"]
    if tls:
        command += ["--tls-on-connect" if implicit else "--tls"]
        command += ["--tls-verify", "--tls-ca-path", str(listener.ca_file)]
    if key is not None:
        command += ["--auth", "PLAIN", "--auth-user", "apikey", "--auth-password", key]
    process = await asyncio.create_subprocess_exec(
        *command, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    return SwaksRun(process.returncode or 0, output.decode(errors="replace"))
