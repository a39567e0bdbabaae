"""Fixtures of the dashboard tests: a dev-mode API with a capture mailbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest_asyncio

from app.accounts.service import split_key
from app.core.config import Settings
from app.dev.mailbox import start_capture_server
from tests.fakes.mx import free_port
from tests.support import ApiServer, Sender


@dataclass
class DevDashboard:
    """An API in dev mode whose mailbox a capture SMTP server fills."""

    api: ApiServer
    mailbox: Path
    smtp_port: int

    def signin_link(self, key: str) -> str:
        """A one-time sign-in link, as `columba dev`'s banner prints it."""
        parts = split_key(key)
        assert parts is not None
        return f"/dashboard/signin/{self.api.app.state.signin_links.issue(parts[0])}"

    async def capture(self, message: EmailMessage) -> None:
        """Deliver `message` to the capture server over SMTP."""
        await aiosmtplib.send(message, hostname="127.0.0.1", port=self.smtp_port)


@pytest_asyncio.fixture
async def dev_dashboard(
    settings: Settings, tmp_path: Path, sender: Sender
) -> AsyncIterator[DevDashboard]:
    """A dev-mode API (plain-HTTP cookies, the mailbox shown) over the test database."""
    dev = settings.model_copy(update={"dev_mode": True, "var_dir": tmp_path})
    port = free_port()
    capture = await start_capture_server(tmp_path / "mailbox", "127.0.0.1", port)
    try:
        async with ApiServer.running(dev) as api:
            yield DevDashboard(api, tmp_path / "mailbox", port)
    finally:
        capture.close()
        await capture.wait_closed()


def sample_mail() -> EmailMessage:
    """A mail with text, HTML (with a script and a remote image) and an attachment."""
    message = EmailMessage()
    message["From"] = "Shop <shop@columba.test>"
    message["To"] = "you@example.test"
    message["Subject"] = "Your receipt"
    message.set_content("Thank you for your order.")
    message.add_alternative(
        '<h1>Receipt</h1><p>Thank you.</p><script>document.title="owned"</script>'
        '<img src="http://tracker.example.test/pixel.gif" alt="pixel">',
        subtype="html",
    )
    message.add_attachment(
        b"%PDF-1.4 receipt", maintype="application", subtype="pdf", filename="receipt.pdf"
    )
    return message
