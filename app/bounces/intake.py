"""What a returned message is: one reading per message, never an exception.

Standards first (RFC 3464/6533 DSNs, RFC 5965 ARF), then the providers' own complaint
formats, then auto-replies, then the non-standard bounce formats flufl.bounce knows. What none
of them recognises is unclassified: kept and counted, never a bounce, because a wrong
suppression costs a customer their receipts."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field, replace
from email.message import Message
from enum import StrEnum

from app.bounces import autoreply, plaintext
from app.bounces.reports import (
    DeliveryReport,
    FeedbackReport,
    RecipientStatus,
    parse_message,
    report_of,
    returned_headers,
    strip_type,
)

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What Columba concluded about a message it received."""

    BOUNCE = "bounce"  # a recipient failed for good (hard, soft or block: see the classification)
    DELAY = "delay"  # still being tried (Action: delayed, 4.x.x warnings)
    DELIVERED = "delivered"  # a delivery confirmation (Action: delivered, relayed, expanded)
    COMPLAINT = "complaint"  # a spam report (ARF abuse, fraud, virus; JMRP; AOL)
    FEEDBACK = "feedback"  # an ARF report that is no complaint (not-spam, auth-failure)
    UNSUBSCRIBE = "unsubscribe"  # a mailto List-Unsubscribe request
    AUTO_REPLY = "auto_reply"  # vacation, out-of-office, RFC 3834, challenge-response
    UNCLASSIFIED = "unclassified"  # not understood, or not readable: kept, changes nothing


# RFC 5965 §7.3 and RFC 6650: types that say a person or filter objected to the mail.
COMPLAINT_FEEDBACK = {"abuse", "fraud", "virus", "other", "opt-out", "opt-out-list"}
# Senders of the pre-ARF complaint formats: Microsoft JMRP (staff@hotmail.com), AOL (scomp).
_COMPLAINT_SENDERS = re.compile(r"^(?:staff@hotmail\.com|scomp@aol\.net)$", re.I)
_COMPLAINT_SUBJECT = re.compile(r"^\s*complaint about message from\b", re.I)
_UNSUBSCRIBE_SUBJECT = re.compile(r"^\s*unsubscribe\b", re.I)
# A line of only spaces or tabs: a separator to every reader (RFC 3464 §2.1 groups are
# separated by blank lines; some MTAs write spaces there), never a header continuation.
_WHITESPACE_LINE = re.compile(rb"(?m)^[ \t]+(\r?)$")
_ADDRESS = re.compile(r"<?([^\s<>\"]+@[^\s<>\"]+)>?")


@dataclass(frozen=True, slots=True)
class Reading:
    """What one message says."""

    outcome: Outcome
    detector: str
    statuses: tuple[RecipientStatus, ...] = ()
    feedback: FeedbackReport | None = None
    reporting_mta: str | None = None
    original_headers: Message | None = field(default=None, compare=False)
    reason: str | None = None
    subject: str = ""
    sender: str | None = None

    @property
    def failures(self) -> tuple[RecipientStatus, ...]:
        """The failed recipient blocks."""
        return tuple(s for s in self.statuses if s.failed)


def read_message(data: bytes, *, envelope_sender: str = "") -> Reading:
    """The reading of a raw message; a parser error gives an unclassified reading."""
    try:
        data = _WHITESPACE_LINE.sub(rb"\1", data)
        return _read(parse_message(data), data, envelope_sender=envelope_sender)
    except Exception as exc:  # any parser failure: the message is kept, unclassified
        log.warning("could not read an inbound message: %r", exc)
        return Reading(Outcome.UNCLASSIFIED, "error", reason=f"unreadable: {exc!r}"[:500])


def _read(message: Message, data: bytes, *, envelope_sender: str) -> Reading:
    """The reading, with the message's subject and sender."""
    reading = _recognise(message, data, envelope_sender=envelope_sender)
    return _cleaned(
        replace(reading, subject=autoreply.subject_of(message)[:500], sender=_from(message))
    )


def clean(text: str | None) -> str | None:
    """Text any database stores: no NUL, no lone surrogates (raw 8-bit header bytes)."""
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _cleaned_status(status: RecipientStatus) -> RecipientStatus:
    """A recipient block with every text field cleaned."""
    return RecipientStatus(
        final_recipient=clean(status.final_recipient),
        original_recipient=clean(status.original_recipient),
        action=status.action,
        status=status.status,
        diagnostic=clean(status.diagnostic),
        remote_mta=clean(status.remote_mta),
        status_comment=clean(status.status_comment),
    )


def _cleaned(reading: Reading) -> Reading:
    """The reading with everything it may store cleaned (see `clean`)."""
    feedback = reading.feedback
    if feedback is not None:
        feedback = replace(
            feedback,
            feedback_type=clean(feedback.feedback_type) or "abuse",
            user_agent=clean(feedback.user_agent),
            original_rcpt_to=tuple(clean(a) or "" for a in feedback.original_rcpt_to),
            reporting_mta=clean(feedback.reporting_mta),
        )
    return replace(
        reading,
        statuses=tuple(_cleaned_status(s) for s in reading.statuses),
        feedback=feedback,
        reporting_mta=clean(reading.reporting_mta),
        subject=clean(reading.subject) or "",
        sender=clean(reading.sender),
        reason=clean(reading.reason),
    )


def _recognise(message: Message, data: bytes, *, envelope_sender: str) -> Reading:
    """Each reader in turn; the first that recognises the message decides."""
    report = report_of(message)
    if isinstance(report, FeedbackReport):
        return _from_feedback(report)
    if isinstance(report, DeliveryReport) and report.recipients:
        return _from_dsn(report)
    complaint = _legacy_complaint(message)
    if complaint is not None:
        return _from_feedback(complaint)
    auto = autoreply.kind_of_auto_reply(message)
    if auto in ("vacation", "challenge-response"):
        return Reading(Outcome.AUTO_REPLY, auto)
    text = plaintext.detect(message, data)
    if text is not None:
        return _from_statuses(text.recipients, "text", None, returned_headers(message))
    if isinstance(report, DeliveryReport):
        # A DSN naming no recipient action: the VERP address names the recipient, and the
        # notice's own text says what happened, when it quotes the server's reply.
        quoted = plaintext.quoted_failure(message)
        if quoted is not None:
            return _from_statuses((quoted,), "dsn-text", report.reporting_mta, None)
    if auto is not None:
        return Reading(Outcome.AUTO_REPLY, auto)
    if _is_unsubscribe(message, envelope_sender):
        return Reading(Outcome.UNSUBSCRIBE, "list-unsubscribe")
    reason = "a DSN that names no recipient action" if report else "no known bounce format"
    return Reading(Outcome.UNCLASSIFIED, "none", reason=reason)


def _from(message: Message) -> str | None:
    """The From address."""
    found = _ADDRESS.search(str(message.get("From", "")))
    return found.group(1)[:255] if found else None


def _from_feedback(report: FeedbackReport) -> Reading:
    """A complaint for the complaining types, feedback for the others."""
    outcome = Outcome.COMPLAINT if report.feedback_type in COMPLAINT_FEEDBACK else Outcome.FEEDBACK
    detector = "arf" if report.standard else "complaint-format"
    return Reading(
        outcome,
        detector,
        feedback=report,
        reporting_mta=report.reporting_mta,
        original_headers=report.original_headers,
    )


def _from_dsn(report: DeliveryReport) -> Reading:
    """Bounce when any recipient failed, else delay, else a delivery confirmation."""
    detector = "global-dsn" if report.global_report else "dsn"
    return _from_statuses(
        report.recipients, detector, report.reporting_mta, report.original_headers
    )


def _from_statuses(
    statuses: tuple[RecipientStatus, ...],
    detector: str,
    reporting_mta: str | None,
    original: Message | None,
) -> Reading:
    """The outcome of a set of recipient blocks: the most serious action decides."""
    actions = {s.action for s in statuses}
    if "failed" in actions:
        outcome = Outcome.BOUNCE
    elif "delayed" in actions:
        outcome = Outcome.DELAY
    else:
        outcome = Outcome.DELIVERED
    return Reading(
        outcome,
        detector,
        statuses=statuses,
        reporting_mta=reporting_mta,
        original_headers=original,
    )


def _legacy_complaint(message: Message) -> FeedbackReport | None:
    """Microsoft's JMRP and AOL's pre-ARF reports: the complained-of message attached, the
    recipient in X-HmXmrOriginalRecipient (Microsoft) or the attached To (AOL)."""
    original = returned_headers(message)
    sender = _from(message) or ""
    hotmail_recipient = original.get("X-HmXmrOriginalRecipient") if original else None
    if not (
        _COMPLAINT_SENDERS.match(sender)
        or _COMPLAINT_SUBJECT.match(autoreply.subject_of(message))
        or hotmail_recipient is not None
    ):
        return None
    if original is None:
        return None
    recipients = [strip_type(str(hotmail_recipient))] if hotmail_recipient else []
    if not recipients and original.get("To"):
        found = _ADDRESS.search(str(original["To"]))
        recipients = [found.group(1)] if found else []
    return FeedbackReport(
        feedback_type="abuse",
        user_agent="Microsoft JMRP" if "hotmail" in sender.lower() else sender or None,
        original_rcpt_to=tuple(r for r in recipients if r),
        original_headers=original,
        standard=False,
    )


def _is_unsubscribe(message: Message, envelope_sender: str) -> bool:
    """A person's `mailto:` List-Unsubscribe request (RFC 2369 §3.2): an `unsubscribe`
    subject, from a real sender (a bounce has a null one), not generated automatically."""
    if is_null_sender(envelope_sender) or autoreply.auto_submitted(message) is not None:
        return False
    return _UNSUBSCRIBE_SUBJECT.match(autoreply.subject_of(message)) is not None


def unsubscribe_request(reading: Reading, *, envelope_sender: str) -> Reading:
    """The reading of a message sent to an unsubscribe address (app.tracking.tokens): any
    mail a person sent there asks to unsubscribe, whatever its subject; a bounce (null
    sender) or an automatic reply does not, and keeps its own reading."""
    if is_null_sender(envelope_sender) or reading.outcome not in (
        Outcome.UNSUBSCRIBE,
        Outcome.UNCLASSIFIED,
    ):
        return reading
    return dataclasses.replace(
        reading, outcome=Outcome.UNSUBSCRIBE, detector="unsubscribe-address", reason=None
    )


def is_null_sender(envelope_sender: str) -> bool:
    """A null reverse path (RFC 5321 §4.5.5: what bounces are sent with), as "" or "<>"."""
    return not envelope_sender.strip().strip("<>").strip()
