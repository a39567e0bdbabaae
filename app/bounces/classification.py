"""Bounce classification: hard, soft or block, and SendGrid's bounce_classification bucket.

This is Columba's own minimal mapping from the enhanced status code (RFC 3463) and the reply
text. The delivery engine (issue 3) builds a fuller one in app/delivery/classify.py; once it is
on main, `classify()` here should delegate to it so that synchronous and asynchronous bounces
are classified alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class BounceKind(StrEnum):
    """What a failure means for future sends."""

    HARD = "hard"  # the address does not work: suppress it
    SOFT = "soft"  # temporary trouble (mailbox full, over quota): keep sending
    BLOCK = "block"  # a policy or reputation rejection: list it, do not suppress


# SendGrid's bounce_classification values (tsg_suppressions_v3.yaml, Classification).
INVALID_ADDRESS = "Invalid Address"
MAILBOX_UNAVAILABLE = "Mailbox Unavailable"
CONTENT = "Content"
REPUTATION = "Reputation"
VOLUME = "Frequency or Volume Too High"
TECHNICAL = "Technical Failure"
UNCLASSIFIED = "Unclassified"


@dataclass(frozen=True, slots=True)
class Classification:
    """A failure's kind and SendGrid bucket."""

    kind: BounceKind
    bucket: str

    @property
    def sendgrid_type(self) -> str:
        """The `type` field of SendGrid's bounce event: `blocked` for blocks."""
        return "blocked" if self.kind is BounceKind.BLOCK else "bounce"


_REPUTATION = re.compile(r"reputation|block ?list|black ?list|spamhaus|\brbl\b|dnsbl|listed", re.I)
_CONTENT = re.compile(r"spam|content|virus|malware|phish|message rejected", re.I)
_VOLUME = re.compile(r"rate|too many|throttl|volume|frequency", re.I)

# RFC 3463 §3.2 (addressing) and §3.3 (mailbox) details that mean the address is dead.
_DEAD_ADDRESS = {"1.0", "1.1", "1.2", "1.3", "1.6", "1.10"}
_MAILBOX_FULL = {"2.2", "2.3"}


def classify(enhanced: str | None, text: str = "", *, code: int | None = None) -> Classification:
    """Classify a permanent or temporary failure from its enhanced code and reply text."""
    klass, _, detail = (enhanced or "").partition(".")
    if not klass and code is not None:
        klass = str(code)[0]
    if detail in _DEAD_ADDRESS and klass == "5":
        return Classification(BounceKind.HARD, INVALID_ADDRESS)
    if detail in _MAILBOX_FULL:
        return Classification(BounceKind.SOFT, MAILBOX_UNAVAILABLE)
    if detail == "2.1" and klass == "5":
        return Classification(BounceKind.HARD, MAILBOX_UNAVAILABLE)  # mailbox disabled
    if detail.startswith("7.") or _REPUTATION.search(text):
        return Classification(BounceKind.BLOCK, _policy_bucket(text))
    if klass == "4":
        return Classification(BounceKind.SOFT, VOLUME if _VOLUME.search(text) else TECHNICAL)
    if detail[:1] in {"3", "4", "5", "6"}:
        return Classification(BounceKind.HARD, TECHNICAL)
    return Classification(BounceKind.HARD, UNCLASSIFIED)


def _policy_bucket(text: str) -> str:
    """Which kind of policy rejection the reply text describes."""
    if _REPUTATION.search(text):
        return REPUTATION
    if _VOLUME.search(text):
        return VOLUME
    if _CONTENT.search(text):
        return CONTENT
    return REPUTATION
