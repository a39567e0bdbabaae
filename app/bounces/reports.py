"""Reading bounce and complaint reports with the email package.

RFC 3464 delivery status notifications (multipart/report; report-type=delivery-status) and
RFC 5965 feedback reports (report-type=feedback-report, the ARF format of FBLs). Pure
functions over bytes: nothing here touches the database."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message

from app.delivery.replies import Reply

_REPLY = re.compile(r"^(\d{3})[ -]?(.*)\Z", re.S)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\Z")  # \Z: $ allows a final newline


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One per-recipient block of a DSN (RFC 3464 §2.3)."""

    final_recipient: str | None
    original_recipient: str | None
    action: str
    status: str | None
    diagnostic: str | None
    remote_mta: str | None

    @property
    def failed(self) -> bool:
        """Action: failed (RFC 3464 §2.3.3); delayed, delivered, relayed and expanded are not."""
        return self.action == "failed"

    def reply(self) -> Reply:
        """The remote server's reply from Diagnostic-Code, or one made from Status."""
        code, text = 550, self.diagnostic or ""
        match = _REPLY.match(text)
        if match is not None:
            code, text = int(match.group(1)), match.group(2)
        elif self.status and self.status.startswith("4"):
            code = 450
        parsed = Reply.parse(code, text)
        enhanced = parsed.enhanced or self.status
        return Reply(code=parsed.code, text=parsed.text, enhanced=enhanced)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """An RFC 3464 DSN."""

    reporting_mta: str | None
    recipients: tuple[RecipientStatus, ...]
    original_headers: Message | None = None


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """An RFC 5965 ARF report: someone marked a message as spam (or similar)."""

    feedback_type: str
    user_agent: str | None
    original_rcpt_to: tuple[str, ...] = ()
    original_mail_from: str | None = None
    reporting_mta: str | None = None
    original_headers: Message | None = field(default=None, compare=False)


def parse_report(data: bytes) -> DeliveryReport | FeedbackReport | None:
    """The report a message carries, or None when it is neither a DSN nor an ARF report."""
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    report = _report_part(message)
    if report is None:
        return None
    report_type = report.get_param("report-type", "")
    report_type = str(report_type).lower() if isinstance(report_type, str) else ""
    if report_type == "delivery-status":
        return _delivery_report(report)
    if report_type == "feedback-report":
        return _feedback_report(report)
    return None


def _report_part(message: Message) -> Message | None:
    """The multipart/report part (RFC 6522), at the top or nested (some MTAs wrap it)."""
    for part in message.walk():
        if part.get_content_type() == "multipart/report":
            return part
    return None


def _strip_type(value: str | None) -> str | None:
    """`rfc822; user@example.com` → `user@example.com` (RFC 3464 §2.3.1, address-type)."""
    if value is None:
        return None
    _, semicolon, address = str(value).partition(";")
    address = (address if semicolon else value).strip().strip("<>").strip()
    return address or None


def _unfold(value: object) -> str | None:
    """A header value on one line."""
    return " ".join(str(value).split()) if value is not None else None


def _delivery_report(report: Message) -> DeliveryReport | None:
    """The DSN's per-message and per-recipient fields."""
    status_part = next(
        (p for p in report.walk() if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        return None
    payload = status_part.get_payload()
    blocks = [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []
    if not blocks:
        return None
    per_message, per_recipient = blocks[0], blocks[1:]
    recipients = tuple(
        RecipientStatus(
            final_recipient=_strip_type(block.get("Final-Recipient")),
            original_recipient=_strip_type(block.get("Original-Recipient")),
            action=str(block.get("Action", "")).strip().lower(),
            status=_status(block.get("Status")),
            diagnostic=_strip_type(_unfold(block.get("Diagnostic-Code"))),
            remote_mta=_strip_type(block.get("Remote-MTA")),
        )
        for block in per_recipient
        if block.get("Final-Recipient") or block.get("Original-Recipient")
    )
    return DeliveryReport(
        reporting_mta=_strip_type(per_message.get("Reporting-MTA")),
        recipients=recipients,
        original_headers=_original(report),
    )


def _status(value: object) -> str | None:
    """The Status field's code (some MTAs add a comment after it)."""
    if value is None:
        return None
    code = str(value).strip().split()[0] if str(value).strip() else ""
    return code if _ENHANCED.match(code) else None


def _feedback_report(report: Message) -> FeedbackReport | None:
    """The ARF report's machine-readable part (RFC 5965 §3.1)."""
    part = next(
        (p for p in report.walk() if p.get_content_type() == "message/feedback-report"), None
    )
    if part is None:
        return None
    fields = _fields_of(part)
    if fields is None:
        return None
    return FeedbackReport(
        feedback_type=str(fields.get("Feedback-Type", "abuse")).strip().lower(),
        user_agent=_unfold(fields.get("User-Agent")),
        original_rcpt_to=tuple(
            address
            for value in fields.get_all("Original-Rcpt-To", [])
            if (address := _strip_type(value))
        ),
        original_mail_from=_strip_type(fields.get("Original-Mail-From")),
        reporting_mta=_strip_type(fields.get("Reporting-MTA")),
        original_headers=_original(report),
    )


def _fields_of(part: Message) -> Message | None:
    """The header block of a message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        first = payload[0]
        return first if isinstance(first, Message) else None
    if isinstance(payload, str):
        return email.message_from_string(payload.lstrip(), policy=email.policy.compat32)
    return None


def _original(report: Message) -> Message | None:
    """The returned message or its headers (message/rfc822 or text/rfc822-headers)."""
    for part in report.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if content_type in ("text/rfc822-headers", "text/rfc822-header"):
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return email.message_from_bytes(text.lstrip(), policy=email.policy.compat32)
    return None
