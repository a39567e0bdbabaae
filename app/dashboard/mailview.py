"""A raw message taken apart for display: headers, text, HTML and attachments."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attached file (its content is fetched on download only)."""

    index: int
    filename: str
    content_type: str
    size: int


@dataclass(slots=True)
class MailView:
    """What the mail pages show of one message."""

    headers: list[tuple[str, str]]
    subject: str
    sender: str
    to: str
    date: str
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)


def parse(data: bytes) -> EmailMessage:
    """The message, parsed leniently (the default policy decodes RFC 2047 words)."""
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def view(data: bytes) -> MailView:
    """Headers and the parts a reader looks at: the first text and HTML bodies, attachments."""
    message = parse(data)
    found = MailView(
        headers=[(name, _text(value)) for name, value in message.items()],
        subject=_text(message.get("Subject", "")),
        sender=_text(message.get("From", "")),
        to=_text(message.get("To", "")),
        date=_text(message.get("Date", "")),
    )
    for index, part in enumerate(_leaves(message)):
        kind = part.get_content_type()
        if part.is_attachment() or not kind.startswith("text/"):
            size = len(part.get_payload(decode=True) or b"")
            found.attachments.append(Attachment(index, _filename(part, index), kind, size))
        elif kind == "text/plain" and found.text is None:
            found.text = _content(part)
        elif kind == "text/html" and found.html is None:
            found.html = _content(part)
    return found


def attachment(data: bytes, index: int) -> tuple[str, bytes] | None:
    """(file name, bytes) of the leaf part at `index`; None when there is none."""
    for position, part in enumerate(_leaves(parse(data))):
        if position == index:
            payload = part.get_payload(decode=True)
            return _filename(part, index), payload if isinstance(payload, bytes) else b""
    return None


def _leaves(message: EmailMessage) -> list[EmailMessage]:
    """Every non-multipart part, in order (a message/rfc822 counts as one leaf)."""
    return [part for part in message.walk() if not part.is_multipart()]


def _filename(part: EmailMessage, index: int) -> str:
    """The part's file name, or a made-up one (never a path: a name alone)."""
    name = part.get_filename() or f"part-{index}"
    return name.replace("/", "_").replace("\\", "_")


def _content(part: EmailMessage) -> str:
    """A text part decoded; undecodable bytes replaced rather than failing the page."""
    try:
        return str(part.get_content())
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""


def _text(value: object) -> str:
    """A header value as one line of text."""
    return " ".join(str(value).split())
