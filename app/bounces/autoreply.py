"""Auto-replies: vacation and out-of-office notices, RFC 3834 responses, challenge-response
systems. None of them says anything about the address, so none may suppress it.

The signals are headers, first: RFC 3834 `Auto-Submitted: auto-replied`, and what Exchange,
Gmail and the common responders add (`X-Auto-Response-Suppress` is a request, not a marker,
so it is not read); then the subject lines responders use in many languages."""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from email.message import Message

_MARKER_HEADERS = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-mailautoreply",
    "x-vacationmessage",
    "x-cr-hashedpuzzle",
)
_PRECEDENCE = re.compile(r"^\s*auto[_-]?reply\b", re.I)
_CHALLENGE_HEADERS = ("x-boxtrapper", "x-challenge", "x-challengeid", "x-spamarrest-noauth")
_VACATION_SUBJECT = re.compile(
    r"|".join(
        (
            r"\bout of (?:the )?office\b",
            r"\bautomatic reply\b",
            r"\bauto(?:matic)?[- ]?re(?:ply|sponse)\b",
            r"^\s*auto:",
            r"\bvacation\b",
            r"\bon leave\b",
            r"\baway from (?:my|the) (?:desk|office)\b",
            r"\babwesenheitsnotiz\b",
            r"\bautomatische antwort\b",
            r"\babsence\b",
            r"\bréponse automatique\b",
            r"\brespuesta automática\b",
            r"\bfuera de la oficina\b",
            r"\brisposta automatica\b",
            r"\bfuori sede\b",
            r"\bafwezig\b",
            r"\bautomatisch antwoord\b",
        )
    ),
    re.I,
)
_CHALLENGE_SUBJECT = re.compile(
    r"please confirm|verify (?:your|that you)|confirm (?:your|that you)|"
    r"spam ?arrest|challenge|awaiting (?:your )?(?:confirmation|verification)",
    re.I,
)


def subject_of(message: Message) -> str:
    """The Subject, RFC 2047 words decoded; empty when missing or undecodable."""
    value = message.get("Subject")
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError):
        return str(value)


def auto_submitted(message: Message) -> str | None:
    """RFC 3834 §5: the Auto-Submitted keyword, lower-case; None for `no` or absent."""
    value = str(message.get("Auto-Submitted", "")).strip().lower()
    keyword = value.split(";")[0].split("(")[0].strip()
    return keyword if keyword and keyword != "no" else None


def kind_of_auto_reply(message: Message) -> str | None:
    """`challenge-response`, `vacation` or `auto-replied` when the message is an automatic
    answer to a person rather than a delivery report; None otherwise."""
    headers = {name.lower() for name in message}
    subject = subject_of(message)
    if headers & set(_CHALLENGE_HEADERS) or _CHALLENGE_SUBJECT.search(subject):
        return "challenge-response"
    if headers & set(_MARKER_HEADERS) or _VACATION_SUBJECT.search(subject):
        return "vacation"
    if _PRECEDENCE.match(str(message.get("Precedence", ""))):
        return "vacation"
    if auto_submitted(message) == "auto-replied":
        return "auto-replied"
    return None
