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
    """A file carried by the message; inline ones are referenced as `cid:<content_id>`."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    disposition: str | None = None  # None: inline when it has a content_id

    @property
    def is_inline(self) -> bool:
        """True when the part belongs in multipart/related rather than multipart/mixed.

        A disposition given decides, as in SendGrid: a file sent as `attachment` stays one
        even with a `content_id` (which it keeps as its Content-ID, RFC 2392)."""
        if self.disposition is None:
            return self.content_id is not None
        return self.disposition == "inline"


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
    # Further alternatives after text and html: (content type with parameters, text).
    alternatives: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = field(default=())
