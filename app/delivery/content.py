"""Plain data that describes one message to render: what the worker hands to `mime.render`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: an address and an optional display name."""

    email: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file carried by the message; `content_id` set means inline (referenced as `cid:`)."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    disposition: str = "attachment"

    @property
    def is_inline(self) -> bool:
        """True when the part belongs in multipart/related rather than multipart/mixed."""
        return self.disposition == "inline" or self.content_id is not None


@dataclass(frozen=True, slots=True)
class MessageContent:
    """Everything needed to render one message deterministically (same input, same bytes)."""

    message_id: str  # the Message-ID header value, with angle brackets
    date: datetime  # timezone-aware; fixed when the message was accepted
    sender: Address
    subject: str
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    text: str | None = None
    html: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = field(default=())
