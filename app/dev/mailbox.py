"""The capture SMTP server of `columba dev`: every message lands as an .eml file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from app.core import clock
from app.core.ids import new_id


class MailboxHandler:
    """Saves each received message under `directory`, named by time of arrival."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """Write the message with a Return-Path and the envelope recipients as a header."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{clock.now():%Y%m%d-%H%M%S}-{new_id()}.eml"
        header = (
            f"Return-Path: <{envelope.mail_from}>\r\n"
            f"X-Columba-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        data = envelope.original_content or b""
        (self.directory / name).write_bytes(header + data)
        self.received += 1
        return "250 2.0.0 captured as " + name


async def start_capture_server(directory: Path, host: str, port: int) -> asyncio.Server:
    """Listen for SMTP on host:port and capture everything."""
    handler = MailboxHandler(directory)

    def factory() -> Any:
        return SMTP(handler, hostname="columba-dev-capture", decode_data=False)

    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, host=host, port=port)
