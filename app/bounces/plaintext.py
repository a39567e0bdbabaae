"""Non-standard bounces: qmail, Exim, old Yahoo, Exchange, GroupWise, Lotus, SMTP32 and the
many plain-text notices of servers that never wrote RFC 3464.

Detection is flufl.bounce's (GNU Mailman's bounce detectors, kept since 2004 against a
corpus of real bounces): it says which addresses failed for good and which are only delayed.
What it does not give, the server's reply, is taken from the text near each address so the
same classification table as synchronous replies can judge it."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass
from email.message import Message

# The detectors in flufl.bounce's own order (most specific first), as all_failures() runs them.
from flufl.bounce._scan import _DETECTORS

from app.bounces.reports import MESSAGE_TYPES, RecipientStatus, part_text

log = logging.getLogger(__name__)

# An SMTP reply quoted in the text: `550 5.1.1 …`, `550-5.1.1 …`, `<x>: 550 …`, `(#5.1.1)`.
_QUOTED_REPLY = re.compile(r"(?<![\d.])([45]\d\d)[ -](?:#?([45]\.\d{1,3}\.\d{1,3})\b)?")
_QUOTED_STATUS = re.compile(r"(?:^|[\s(#])([45]\.\d{1,3}\.\d{1,3})(?=[\s),;:]|$)")
_DIAGNOSTIC_LINES = 4
_DIAGNOSTIC_CHARS = 500


@dataclass(frozen=True, slots=True)
class TextBounce:
    """What a non-standard bounce says: failed and delayed recipients."""

    recipients: tuple[RecipientStatus, ...]

    @property
    def failed(self) -> bool:
        """Some recipient failed for good."""
        return any(r.failed for r in self.recipients)


def detect(message: Message, raw: bytes) -> TextBounce | None:
    """The recipients a text bounce names, or None when no detector recognises it."""
    temporary, permanent = _failures(_with_text_headers(raw))
    if not temporary and not permanent:
        return None
    text = human_text(message)
    recipients = [_recipient(_decode(address), "failed", text) for address in sorted(permanent)] + [
        _recipient(_decode(address), "delayed", text) for address in sorted(temporary - permanent)
    ]
    return TextBounce(recipients=tuple(recipients))


def _failures(message: Message) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """flufl.bounce's all_failures(), except that a detector that raises (Yale's does on a
    message without From) is skipped instead of ending the search: the next one may know it."""
    for detector in _DETECTORS:
        try:
            temporary, permanent = detector().process(message)
        except Exception as exc:  # a bug in one detector: the others still get their turn
            log.debug("bounce detector %s failed: %r", detector.__name__, exc)
            continue
        if temporary or permanent:
            return frozenset(temporary), frozenset(permanent)
    return frozenset(), frozenset()


def _with_text_headers(raw: bytes) -> Message:
    """The message read from text: the detectors expect str headers, and compat32 gives
    Header objects for headers with raw non-ASCII bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return email.message_from_string(text, policy=email.policy.compat32)


def _decode(address: bytes | str) -> str:
    """flufl.bounce gives bytes."""
    if isinstance(address, bytes):
        return address.decode("utf-8", "replace")
    return address


def human_text(message: Message) -> str:
    """The notice's own text: every text part outside the returned message."""
    texts: list[str] = []
    for part in _text_parts(message):
        texts.append(part_text(part))
    return "\n".join(texts)


def _text_parts(message: Message) -> list[Message]:
    """text/* parts, not descending into message/rfc822."""
    if message.get_content_type() in MESSAGE_TYPES:
        return []
    payload = message.get_payload()
    if isinstance(payload, list):
        return [p for sub in payload if isinstance(sub, Message) for p in _text_parts(sub)]
    return [message] if message.get_content_maintype() == "text" else []


def _recipient(address: str, action: str, text: str) -> RecipientStatus:
    """A recipient block for a text bounce, its diagnostic taken from around the address."""
    diagnostic = diagnostic_near(text, address)
    status = None
    if diagnostic and (found := _QUOTED_STATUS.search(diagnostic)) is not None:
        status = found.group(1)
    return RecipientStatus(
        final_recipient=address,
        original_recipient=None,
        action=action,
        status=status,
        diagnostic=diagnostic,
        remote_mta=None,
    )


def diagnostic_near(text: str, address: str) -> str | None:
    """The lines from the address's first mention on, which is where servers explain it;
    from the first quoted SMTP reply on when there is one; the notice's start otherwise."""
    lines = [line.strip() for line in text.splitlines()]
    lowered = address.lower()
    start = next((i for i, line in enumerate(lines) if lowered in line.lower()), None)
    if start is None:
        start = next((i for i, line in enumerate(lines) if _QUOTED_REPLY.search(line)), 0)
    window = " ".join(line for line in lines[start : start + _DIAGNOSTIC_LINES + 1] if line)
    reply = _QUOTED_REPLY.search(window)
    if reply is not None:
        window = window[reply.start() :]
    return window[:_DIAGNOSTIC_CHARS] or None


def quoted_failure(message: Message) -> RecipientStatus | None:
    """A recipient-less failure or delay from the first SMTP reply the notice quotes."""
    text = human_text(message)
    found = _QUOTED_REPLY.search(text)
    if found is None:
        return None
    line_end = text.find("\n", found.start())
    diagnostic = " ".join(text[found.start() : line_end if line_end > 0 else None].split())
    action = "failed" if found.group(1).startswith("5") else "delayed"
    return RecipientStatus(
        final_recipient=None,
        original_recipient=None,
        action=action,
        status=found.group(2),
        diagnostic=diagnostic[:_DIAGNOSTIC_CHARS],
        remote_mta=None,
    )
