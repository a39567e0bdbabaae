"""A submitted message made ready to store: checked, then changed only where RFC 6409 §8 lets
a submission server change it.

The header block is handled as bytes, field by field, so whatever the client wrote reaches the
recipient unchanged; the email package only reads values (From, To, Cc, Subject). Added: a
Received field (RFC 5321 §4.4), Message-ID and Date when missing (RFC 6409 §8.2, §8.3).
Removed: X-SMTPAPI (its options are taken), Bcc (RFC 5322 §3.6.3), Return-Path (RFC 5321 §4.4
leaves it to final delivery) and Content-Length. 8-bit bodies are transfer-encoded (§8.4).
"""

from __future__ import annotations

import dataclasses
import email.policy
import email.utils
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage, Message
from email.parser import Parser

from app.delivery.content import Address
from app.submission import addresses, encoding, parts, smtpapi
from app.submission.replies import Refusal, refused_content
from app.submission.smtpapi import SmtpApiError, SmtpApiOptions

# RFC 5321 §6.3: a loop is assumed past 100 Received fields (Postfix stops at 50).
MAX_RECEIVED = 100
# RFC 5322 §3.6: fields that may appear at most once; two From fields also defeat DKIM.
SINGLE_FIELDS = frozenset(
    {"date", "from", "sender", "reply-to", "to", "cc", "message-id", "subject", smtpapi.HEADER}
)
_DROPPED_FIELDS = frozenset({"bcc", "resent-bcc", "return-path", "content-length", smtpapi.HEADER})
# RFC 5322 §2.2 / §3.6.8: a field starts with a name of printable ASCII other than ":".
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")
_HELO_SAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")
# What makes the email package read a header block otherwise than _fields: a field name with
# space before the colon (its parser ends the header block there), and characters that
# str.splitlines breaks lines at but bytes.splitlines does not.
_ODD_HEAD = re.compile(rb"^[!-9;-~]+[ \t]+:|[\x0b\x0c\x1c-\x1e]", re.MULTILINE)
_DEFAULT = email.policy.default
_COMPAT32 = email.policy.compat32


@dataclass(frozen=True, slots=True)
class Arrival:
    """How the message reached the listener, for its Received field (RFC 5321 §4.4)."""

    message_id: str
    hostname: str
    helo: str
    client_ip: str
    received_at: datetime
    tls_version: str | None = None
    tls_cipher: str | None = None
    tls_bits: int | None = None


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """The bytes to store and sign, and what the message view shows of them."""

    data: bytes
    sender: Address  # the author, in From
    subject: str
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...] = ()
    sender_field: Address | None = None  # the Sender field (RFC 5322 §3.6.2), if any
    options: SmtpApiOptions = field(default_factory=SmtpApiOptions)


@dataclass(frozen=True, slots=True)
class _Field:
    """One header field: its lower-cased name and its bytes, continuation lines included."""

    name: str
    raw: bytes


def prepare(raw: bytes, arrival: Arrival, *, max_schedule_ahead: timedelta) -> PreparedMessage:
    """Check the message and build what is stored; Refusal says why it cannot be taken.
    X-SMTPAPI's send_at may lie `max_schedule_ahead` ahead at most."""
    head, body = _split(raw)
    fields = _fields(head)
    _check_counts(fields)
    parsed, root = _parsed_head(head, fields)
    # The header fields first: cheap, and a wrong author matters more than a wrong file.
    viewed = _viewed(parsed)
    options = _smtpapi_options(fields, arrival.received_at, max_schedule_ahead)
    parts.check_attachments(raw, root=root)
    kept = [f for f in fields if f.name not in _DROPPED_FIELDS]
    kept += _missing_fields(fields, arrival, dated=options.send_at or arrival.received_at)
    data = _received(arrival) + b"".join(f.raw for f in kept) + b"\r\n" + body
    if not encoding.is_seven_bit(body) and head.isascii():
        data = encoding.transfer_encode(data)
    return dataclasses.replace(viewed, data=data, options=options)


def _viewed(parsed: EmailMessage) -> PreparedMessage:
    """What the message view shows, read from the header fields (`data` still empty)."""
    return PreparedMessage(
        data=b"",
        sender=addresses.author(parsed),
        subject=addresses.subject(parsed),
        to=addresses.shown(parsed, "to"),
        cc=addresses.shown(parsed, "cc"),
        reply_to=addresses.reply_to(parsed),
        sender_field=addresses.sender(parsed),
    )


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """Header block (each line with its CRLF) and body; a message may have no body at all."""
    if raw.startswith(b"\r\n"):
        return b"", raw[2:]  # no header fields at all
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        head = raw if raw.endswith(b"\r\n") or not raw else raw + b"\r\n"
        return head, b""
    return raw[: end + 2], raw[end + 4 :]


def _fields(head: bytes) -> list[_Field]:
    """The header fields in order; a line that is neither a field nor a continuation is refused
    rather than guessed at, so we and every later reader agree on where the body starts."""
    fields: list[_Field] = []
    for number, line in enumerate(head.splitlines(keepends=True), start=1):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = _Field(fields[-1].name, fields[-1].raw + line)
        elif _FIELD_START.match(line):
            name = line.split(b":", 1)[0].strip().decode("ascii").lower()
            fields.append(_Field(name, line))
        else:
            raise refused_content(f"header line {number} is not a header field (RFC 5322 §2.2)")
    return fields


def _check_counts(fields: list[_Field]) -> None:
    """Refuse mail loops and fields RFC 5322 §3.6 allows only once."""
    counts = Counter(f.name for f in fields)
    if counts["received"] >= MAX_RECEIVED:
        # Ours makes one more: past the limit, the message has looped (RFC 3463 X.4.6).
        raise Refusal(554, "5.4.6", f"Too many Received header fields ({counts['received']}): "
                      "mail loop detected")  # fmt: skip
    for name in sorted(SINGLE_FIELDS):
        if counts[name] > 1:
            raise refused_content(f"{counts[name]} {name} header fields; RFC 5322 §3.6 allows one")
    if counts["from"] == 0:
        raise refused_content("no From header field (RFC 5322 §3.6.2)")


def _parsed_head(head: bytes, fields: list[_Field]) -> tuple[EmailMessage, Message | None]:
    """The header block as the email package reads it (policy.default, for the values the
    view shows), and for plain ASCII also as compat32 reads it (for the attachment policy).

    For plain ASCII the messages are built from our fields, as the parser would build them
    (each field through the policy's header_source_parse): parsing is what the listener spent
    most of its time on. The parser still reads UTF-8 heads, and heads where it would see
    other lines than ours (a name with space before its colon ends its header block; str
    line breaks that bytes do not know), so what it reads never differs."""
    if not head.isascii() or _ODD_HEAD.search(head):
        text = _decoded_head(head)
        return Parser(policy=_DEFAULT).parsestr(text + "\r\n", headersonly=True), None
    parsed, root = EmailMessage(policy=_DEFAULT), Message(policy=_COMPAT32)
    for found in fields:
        lines = found.raw.decode("ascii").splitlines(keepends=True)
        parsed.set_raw(*_DEFAULT.header_source_parse(lines))
        root.set_raw(*_COMPAT32.header_source_parse(lines))
    return parsed, root


def _decoded_head(head: bytes) -> str:
    """The header block as text: ASCII, or UTF-8 as RFC 6532 allows."""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        raise refused_content(
            "header fields must be ASCII (with RFC 2047 encoded-words) or UTF-8 (RFC 6532)"
        ) from None


def _unfolded(raw: bytes) -> str:
    """A field's value with folding undone (RFC 5322 §2.2.3)."""
    value = raw.split(b":", 1)[1].decode("utf-8")
    return re.sub(r"\r\n(?=[ \t])", "", value).strip()


def _smtpapi_options(fields: list[_Field], now: datetime, max_ahead: timedelta) -> SmtpApiOptions:
    """The X-SMTPAPI options, or none; a header that cannot be honoured is refused."""
    found = next((f for f in fields if f.name == smtpapi.HEADER), None)
    if found is None:
        return SmtpApiOptions()
    try:
        return smtpapi.parse(_unfolded(found.raw), now=now, max_ahead=max_ahead)
    except SmtpApiError as exc:
        raise refused_content(f"X-SMTPAPI: {exc}") from None


def _missing_fields(fields: list[_Field], arrival: Arrival, *, dated: datetime) -> list[_Field]:
    """Message-ID and Date when the client left them out (RFC 6409 §8.3, §8.2); the Date is
    `dated`, when the message is first sent (its X-SMTPAPI send_at, if it is scheduled)."""
    names = {f.name for f in fields}
    added = []
    if "message-id" not in names:
        value = f"<{arrival.message_id.lower()}@{arrival.hostname}>"
        added.append(_Field("message-id", f"Message-ID: {value}\r\n".encode()))
    if "date" not in names:
        value = email.utils.format_datetime(dated)
        added.append(_Field("date", f"Date: {value}\r\n".encode()))
    return added


def _received(arrival: Arrival) -> bytes:
    """Our trace field, first in the message (RFC 5321 §4.4); ESMTPSA is RFC 3848's name for
    ESMTP with STARTTLS or TLS and AUTH."""
    helo = _HELO_SAFE.sub("?", arrival.helo)[:255] or "unknown"
    # RFC 5321 §4.1.3: an IPv6 address literal is tagged "IPv6:".
    ip = f"IPv6:{arrival.client_ip}" if ":" in arrival.client_ip else arrival.client_ip
    lines = [f"Received: from {helo} ([{ip}])"]
    if arrival.tls_version:
        bits = f" ({arrival.tls_bits}/{arrival.tls_bits} bits)" if arrival.tls_bits else ""
        lines.append(f"\t(using {arrival.tls_version} with cipher {arrival.tls_cipher}{bits})")
    lines.append(f"\tby {arrival.hostname} (Columba) with ESMTPSA id {arrival.message_id};")
    lines.append(f"\t{email.utils.format_datetime(arrival.received_at)}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
