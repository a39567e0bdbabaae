"""The attachment policy of the send APIs (app.messages.attachments), applied to every part of
a message submitted over SMTP, attached messages included.

A part is checked when a mail program would offer it as a file: it has a file name, is marked
as an attachment, or is not text. An inline text part without a name is the message's body,
which no program runs, whatever its first bytes are.
"""

from __future__ import annotations

import email.policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser

from app.messages import attachments
from app.submission.replies import Refusal

_POLICY = email.policy.compat32


def check_attachments(data: bytes) -> None:
    """Refusal (554 5.7.1, RFC 3463: delivery not authorised) naming the first part the send
    APIs would refuse, if any."""
    message = BytesParser(policy=_POLICY).parsebytes(data)
    for part in message.walk():
        if part.is_multipart() or not _offered_as_file(part):
            continue
        filename = _filename(part)
        content = part.get_payload(decode=True)
        assert isinstance(content, bytes)  # a leaf part always decodes to bytes
        problem = attachments.refusal(filename, part.get_content_type(), content)
        if problem is not None:
            raise Refusal(554, "5.7.1", f"Message refused: {_named(filename)}: {problem}")


def _named(filename: str) -> str:
    """The attachment as the reply names it (escaped when it holds unprintable characters)."""
    if not filename:
        return "an attachment without a name"
    return f"attachment {filename!r}" if filename.isprintable() else f"attachment {filename!a}"


def _offered_as_file(part: Message) -> bool:
    """True when a mail program would offer the part as a file to open or save."""
    disposition = part.get_content_disposition()
    return (
        part.get_filename() is not None
        or disposition == "attachment"
        or part.get_content_maintype() != "text"
    )


def _filename(part: Message) -> str:
    """The part's file name (Content-Disposition filename, else Content-Type name; RFC 2231
    decoded), with RFC 2047 encoded-words decoded as mail programs decode them."""
    raw = part.get_filename() or ""
    if "=?" not in raw:
        return raw
    try:
        return str(make_header(decode_header(raw)))
    except (LookupError, UnicodeDecodeError, ValueError):
        return raw
