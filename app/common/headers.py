"""Header fields the send APIs accept: custom headers with a valid name, not one Columba or
others own, and a value the renderer can write; attachment fields the renderer can write.
Whatever is accepted must render (the renderer's own checks decide)."""

from __future__ import annotations

from app.common.fields import header_name, header_safe
from app.delivery import mime
from app.delivery.content import Attachment

# RFC 5322 §2.1.1: no line longer than 998 octets. A field that fits on one line whole needs
# no folding, so only longer ones are given to the renderer to try.
MAX_LINE = 998

# Headers Columba writes itself; a custom header may not replace or duplicate them.
COLUMBA_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "subject", "reply-to", "date", "message-id", "mime-version",
        "content-type", "content-transfer-encoding", "content-disposition", "dkim-signature",
        "received", "return-path", "sender", "x-sg-id", "x-sg-eid",
    }
)  # fmt: skip
# Headers that only others may write: the receiving side's verdicts (RFC 8601 §5 has border
# MTAs remove forged ones; ARC's, RFC 8617, are sealed by intermediaries).
FOREIGN_HEADERS = frozenset(
    {"authentication-results", "arc-authentication-results", "arc-message-signature", "arc-seal"}
)
# RFC 5322 §3.6.6: Resent-* fields are added by whoever re-sends a message, not its author.
RESENT_PREFIX = "resent-"
# SendGrid's SMTP instructions: the API has a field for each (categories, custom_args or
# metadata, send_at, asm), and passed on the header would show them to every recipient.
SMTPAPI = "x-smtpapi"
RESERVED_HEADERS = COLUMBA_HEADERS | FOREIGN_HEADERS | {SMTPAPI}


def is_reserved(name: str) -> bool:
    """True for a header a custom header may not set."""
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith(RESENT_PREFIX)


def reserved_reason(name: str) -> str:
    """Why a reserved header cannot be given."""
    lowered = name.lower()
    if lowered == SMTPAPI:
        return (
            f"The {name} header is not accepted by the API: use categories, "
            "custom_args (metadata), send_at and asm instead."
        )
    if lowered in COLUMBA_HEADERS:
        return f"The {name} header is set by Columba and cannot be given."
    return f"The {name} header is reserved and cannot be set."


def value_problem(name: str, value: str) -> str | None:
    """Why this header cannot be sent as given (control characters, a line too long)."""
    if not header_safe(value):
        return "Header values must not contain CR, LF, NUL or other control characters."
    if len(name) + len(": ") + len(value.encode()) <= MAX_LINE:
        return None
    try:
        mime.check_custom_header(name, value)
    except ValueError:
        return (
            f"The {name} header cannot be folded into lines of at most {MAX_LINE} octets "
            "(RFC 5322 §2.1.1): break long values with spaces."
        )
    return None


def problem(name: str, value: str) -> str | None:
    """Why a custom header cannot be given, or None when it can."""
    try:
        header_name(name)
    except ValueError as exc:
        return str(exc)
    if is_reserved(name):
        return reserved_reason(name)
    return value_problem(name, value)


def alternative_problem(content_type: str) -> str | None:
    """Why a body of this content type cannot be written, or None."""
    try:
        mime.check_alternative(content_type)
    except ValueError:
        return "The content type must be a text/* MIME type that can be written in a header."
    return None


def attachment_problem(filename: str, content_type: str, content_id: str | None) -> str | None:
    """Why the renderer could not write this attachment's fields, or None."""
    try:
        mime.check_attachment(Attachment(filename, content_type, b"", content_id))
    except ValueError:
        return "The attachment's filename, type or content_id cannot be written in a header."
    return None
