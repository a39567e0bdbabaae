"""The attachment policy of the send APIs (app.messages.attachments), applied to every part of
a message submitted over SMTP, attached messages included.

A part is checked when a mail program would offer it as a file: it has a file name, is marked
as an attachment, or is not text. An inline text part without a name is the message's body,
which no program runs, whatever its first bytes are.
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser

from app.messages import attachments
from app.submission.replies import Refusal, refused_content

_POLICY = email.policy.compat32
MAX_NESTING = 100  # multipart and message/rfc822 levels: Postfix's mime_nesting_limit


def check_attachments(data: bytes, *, root: Message | None = None) -> None:
    """Refusal (554 5.7.1, RFC 3463: delivery not authorised) naming the first part the send
    APIs would refuse, if any. `root`: the message's header fields as compat32 reads them,
    when known; a message that is a single part and no file then needs no parsing at all."""
    if root is not None and _single_text(root):
        return
    try:
        message = BytesParser(policy=_POLICY).parsebytes(data)
    except RecursionError:  # the parser recurses once per level: thousands of them
        raise _too_deep() from None
    for part in _leaves(message):
        if not _offered_as_file(part):
            continue
        filename = _filename(part)
        content = part.get_payload(decode=True)
        assert isinstance(content, bytes)  # a leaf part always decodes to bytes
        problem = attachments.refusal(filename, part.get_content_type(), content)
        if problem is not None:
            raise Refusal(554, "5.7.1", f"Message refused: {_named(filename)}: {problem}")


def _single_text(root: Message) -> bool:
    """True when the message is one part (the parser reads parts only below multipart and
    message types) that no mail program offers as a file: nothing to check."""
    return root.get_content_maintype() not in ("multipart", "message") and not _offered_as_file(
        root
    )


def _leaves(message: Message) -> Iterator[Message]:
    """The leaf parts in order; a refusal past MAX_NESTING levels (deeper nesting serves no
    one, and the standard library walks and writes messages recursively)."""
    stack = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _too_deep()
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            inner = [item for item in reversed(payload) if isinstance(item, Message)]
            stack.extend((item, depth + 1) for item in inner)
        else:
            yield part


def _too_deep() -> Refusal:
    """554 5.6.0: the MIME structure is nested too deeply."""
    return refused_content(f"MIME parts nested more than {MAX_NESTING} levels deep")


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
