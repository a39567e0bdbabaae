"""The capture mailbox of `columba dev` (var/mailbox/*.eml), read for the dashboard."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.core.errors import NotFound
from app.dashboard import mailview

# The names MailboxHandler gives (time of arrival, then an id): nothing else is served, so
# a crafted name can never reach outside the folder.
MAIL_NAME = re.compile(r"^\d{8}-\d{6}-[0-9A-Z]{26}\.eml$")
LIST_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Captured:
    """One captured mail in the list."""

    name: str
    received_at: datetime
    subject: str
    sender: str
    to: str
    size: int


def captured(directory: Path, limit: int = LIST_LIMIT) -> list[Captured]:
    """The newest captured mails first (names sort by time of arrival)."""
    if not directory.is_dir():
        return []
    names = sorted((p.name for p in directory.iterdir() if MAIL_NAME.match(p.name)), reverse=True)
    return [_summary(directory / name) for name in names[:limit]]


def _summary(path: Path) -> Captured:
    """List fields from the head of the file only."""
    with path.open("rb") as handle:
        head = handle.read(64 * 1024).split(b"\r\n\r\n", 1)[0]
    parsed = mailview.parse(head + b"\r\n\r\n")
    stat = path.stat()
    return Captured(
        name=path.name,
        received_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        subject=" ".join(str(parsed.get("Subject", "(no subject)")).split()),
        sender=" ".join(str(parsed.get("From", "")).split()),
        to=" ".join(str(parsed.get("X-Columba-Envelope-To", parsed.get("To", ""))).split()),
        size=stat.st_size,
    )


def read(directory: Path, name: str) -> bytes:
    """The raw bytes of one captured mail; 404 for any name the capture server did not make."""
    if not MAIL_NAME.match(name) or not (directory / name).is_file():
        raise NotFound("no such captured mail", "name")
    return (directory / name).read_bytes()
