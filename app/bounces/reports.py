"""Reading bounce and complaint reports the standards define, leniently.

RFC 3464 delivery status notifications and their RFC 6533 internationalised form
(message/global-delivery-status), RFC 5965 feedback reports (ARF, every feedback type). The
status part is found wherever it sits: under a multipart/report without its report-type
parameter, or inside the multipart/mixed of a DSN forwarded by Outlook or written by
OpenSMTPD. Its fields are read line by line, so a whitespace-only line or an unknown Action
spelling loses nothing. Pure functions over parsed messages: nothing here touches the
database."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.errors import StartBoundaryNotFoundDefect
from email.message import Message

from app.delivery.replies import Reply

_REPLY = re.compile(r"^([245]\d\d)(?:[ -]+|\Z)(.*)\Z", re.S)
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
# RFC 6533 §3: utf-8-addr-xtext / utf-8-addr-unitext encode some characters as \x{HEX}.
_UNITEXT = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")

STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
FEEDBACK_TYPES = ("message/feedback-report", "message/global-feedback-report")
HEADER_TYPES = ("text/rfc822-headers", "text/rfc822-header", "message/global-headers")
MESSAGE_TYPES = ("message/rfc822", "message/global")

# RFC 3464 §2.3.3 names five actions; servers also write these.
_ACTIONS = {
    "failed": "failed",
    "failure": "failed",
    "fail": "failed",
    "error": "failed",
    "undeliverable": "failed",
    "bounced": "failed",
    "rejected": "failed",
    "delayed": "delayed",
    "delay": "delayed",
    "deferred": "delayed",
    "retrying": "delayed",
    "delivered": "delivered",
    "relayed": "relayed",
    "expanded": "expanded",
}


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One per-recipient block of a DSN (RFC 3464 §2.3), or what a text bounce says."""

    final_recipient: str | None
    original_recipient: str | None
    action: str
    status: str | None
    diagnostic: str | None
    remote_mta: str | None
    status_comment: str | None = None

    @property
    def failed(self) -> bool:
        """Action: failed (RFC 3464 §2.3.3); delayed, delivered, relayed and expanded are not."""
        return self.action == "failed"

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses the block names: Original-Recipient first (what was sent to)."""
        return tuple(a for a in (self.original_recipient, self.final_recipient) if a)

    def reply(self) -> Reply:
        """The remote server's reply from Diagnostic-Code, or one made from Status.

        The reply code always agrees with the failure: a diagnostic that starts with a 2xx
        code (`255 5.0.0 …`, `220 4.2.1 …`, both seen from real servers) or with none takes
        its class from Status, so a failure is never mistaken for a delivery."""
        text = self.diagnostic or self.status_comment or ""
        code: int | None = None
        match = _REPLY.match(text)
        if match is not None:
            code, text = int(match.group(1)), match.group(2)
        parsed = Reply.parse(code or 550, text)
        status = _enhanced_of(self.status)
        # The server's own code is the more precise (Exim: Status 5.0.0, the reply 5.1.1),
        # unless it contradicts the Status class.
        same_class = parsed.enhanced and (status is None or parsed.enhanced[0] == status[0])
        enhanced = parsed.enhanced if same_class else status
        klass = (enhanced or "")[:1] or (str(code)[:1] if code and code >= 400 else "5")
        if code is None or code < 400 or str(code)[0] != klass:
            code = 450 if klass == "4" else 550
        return Reply(code=code, text=parsed.text, enhanced=enhanced)


def _enhanced_of(status: str | None) -> str | None:
    """`5.1.1` of a Status value, when it holds one; 2.x.x is no failure code."""
    if status is None or status.startswith("2"):
        return None
    return status


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """An RFC 3464 (or RFC 6533) DSN."""

    reporting_mta: str | None
    recipients: tuple[RecipientStatus, ...]
    original_headers: Message | None = field(default=None, compare=False)
    global_report: bool = False


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """An RFC 5965 ARF report, or a provider's own complaint format read as one."""

    feedback_type: str
    user_agent: str | None
    original_rcpt_to: tuple[str, ...] = ()
    original_mail_from: str | None = None
    reporting_mta: str | None = None
    original_headers: Message | None = field(default=None, compare=False)
    standard: bool = True


def parse_message(data: bytes) -> Message:
    """The message as the email package reads it (compat32 keeps raw bytes recoverable).

    A MIME boundary with raw UTF-8 in it (RFC 6532 allows it) is lost when read as bytes;
    such a message is read again as text."""
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    if any(isinstance(d, StartBoundaryNotFoundDefect) for d in message.defects):
        try:
            return email.message_from_string(data.decode("utf-8"), policy=email.policy.compat32)
        except UnicodeDecodeError:
            return message
    return message


def report_of(message: Message) -> DeliveryReport | FeedbackReport | None:
    """The feedback report or DSN in `message`, wherever its machine-readable part is."""
    feedback = find_part(message, FEEDBACK_TYPES)
    if feedback is not None:
        return _feedback_report(message, feedback)
    status = find_part(message, STATUS_TYPES)
    if status is not None:
        return _delivery_report(message, status)
    return None


def find_part(message: Message, types: tuple[str, ...]) -> Message | None:
    """The first part of one of `types`, outside any returned message it quotes."""
    for part in _walk_outside_returned(message):
        if part.get_content_type() in types:
            return part
    return None


def _walk_outside_returned(message: Message) -> list[Message]:
    """Every part, without descending into message/rfc822 (the original mail, whose own
    attachments might be reports of someone else)."""
    found = [message]
    payload = message.get_payload()
    if message.get_content_type() in MESSAGE_TYPES or not isinstance(payload, list):
        return found
    for part in payload:
        if isinstance(part, Message):
            found.extend(_walk_outside_returned(part))
    return found


def part_text(part: Message) -> str:
    """A part's body as text: decoded, sub-messages re-serialised, bytes kept as UTF-8."""
    payload = part.get_payload()
    if isinstance(payload, list):
        raw = b"\n".join(p.as_bytes() for p in payload if isinstance(p, Message))
    else:
        decoded = part.get_payload(decode=True)
        raw = decoded if isinstance(decoded, bytes) else str(payload).encode("utf-8", "replace")
    return _decode(raw)


def _decode(raw: bytes) -> str:
    """UTF-8 when it is (RFC 6533 reports are), else Latin-1, which never fails."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def field_blocks(text: str) -> list[list[tuple[str, str]]]:
    """`Name: value` blocks separated by empty or whitespace-only lines, folded lines joined
    (RFC 3464 §2.1: the fields follow RFC 822 syntax, groups separated by blank lines)."""
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current = []
        elif line[0] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
        elif (match := _FIELD.match(line)) is not None:
            name = match.group(1).lower()
            if any(key == name for key, _ in current):
                blocks.append(current)  # a field seen twice: the blank line was left out
                current = []
            current.append((name, match.group(2).strip()))
    if current:
        blocks.append(current)
    return blocks


def _get(block: list[tuple[str, str]], name: str) -> str | None:
    """The first value of a field in a block."""
    return next((value for key, value in block if key == name), None)


def strip_type(value: str | None) -> str | None:
    """`rfc822; user@example.com` → `user@example.com` (RFC 3464 §2.3.1 address-type;
    RFC 6533 `utf-8;` addresses with their \\x{HEX} escapes decoded)."""
    if value is None:
        return None
    kind, semicolon, address = str(value).partition(";")
    address = (address if semicolon else value).strip()
    if semicolon and kind.strip().lower().startswith("utf-8"):
        address = _UNITEXT.sub(lambda m: chr(int(m.group(1), 16)), address)
    address = address.strip().strip("<>").strip()
    return address or None


def _status(value: str | None) -> tuple[str | None, str | None]:
    """(the Status code, the comment some MTAs add after it)."""
    if not value:
        return None, None
    match = _ENHANCED.match(value.strip())
    if match is None:
        return None, value.strip() or None
    comment = value.strip()[match.end() :].strip().strip("()").strip()
    return match.group(1), comment or None


def _action(value: str | None, status: str | None) -> str:
    """The action's canonical name; from the Status class when absent or unknown."""
    words = re.findall(r"[a-z]+", (value or "").lower())
    action = _ACTIONS.get(words[0], "") if words else ""
    if action or status is None:
        return action
    return {"5": "failed", "4": "delayed", "2": "delivered"}.get(status[0], "")


def _recipient_status(block: list[tuple[str, str]]) -> RecipientStatus:
    """One per-recipient block."""
    status, comment = _status(_get(block, "status"))
    return RecipientStatus(
        final_recipient=strip_type(_get(block, "final-recipient")),
        original_recipient=strip_type(_get(block, "original-recipient")),
        action=_action(_get(block, "action"), status),
        status=status,
        diagnostic=strip_type(_get(block, "diagnostic-code")),
        remote_mta=strip_type(_get(block, "remote-mta")),
        status_comment=comment,
    )


_RECIPIENT_FIELDS = {"final-recipient", "original-recipient", "action", "status"}


def _delivery_report(message: Message, part: Message) -> DeliveryReport:
    """The DSN's per-message and per-recipient fields. A block with any per-recipient field
    counts (some MTAs put everything in one block, others name no recipient at all)."""
    blocks = field_blocks(part_text(part))
    per_message = blocks[0] if blocks else []
    recipients = tuple(
        _recipient_status(block)
        for block in blocks
        if _RECIPIENT_FIELDS & {name for name, _ in block}
    )
    return DeliveryReport(
        reporting_mta=strip_type(_get(per_message, "reporting-mta")),
        recipients=tuple(r for r in recipients if r.action),
        original_headers=returned_headers(message),
        global_report=part.get_content_type() == "message/global-delivery-status",
    )


def _feedback_report(message: Message, part: Message) -> FeedbackReport:
    """The ARF report's machine-readable part (RFC 5965 §3.1); every feedback type."""
    blocks = field_blocks(part_text(part))
    fields = [pair for block in blocks for pair in block]
    feedback_type = (_get(fields, "feedback-type") or "abuse").strip().lower()
    return FeedbackReport(
        feedback_type=feedback_type.split()[0] if feedback_type else "abuse",
        user_agent=_get(fields, "user-agent"),
        original_rcpt_to=tuple(
            address
            for key, value in fields
            if key == "original-rcpt-to" and (address := strip_type(value))
        ),
        original_mail_from=strip_type(_get(fields, "original-mail-from")),
        reporting_mta=strip_type(_get(fields, "reporting-mta")),
        original_headers=returned_headers(message),
    )


def returned_headers(message: Message) -> Message | None:
    """The returned message or its headers (message/rfc822, text/rfc822-headers, RFC 6533's
    message/global and message/global-headers)."""
    for part in _walk_outside_returned(message):
        content_type = part.get_content_type()
        if content_type in MESSAGE_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str):
                return email.message_from_string(payload.lstrip(), policy=email.policy.compat32)
        if content_type in HEADER_TYPES:
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return email.message_from_bytes(text.lstrip(), policy=email.policy.compat32)
    return None
