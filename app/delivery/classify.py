"""Bounce classification: every failure reply sorted into a kind and a SendGrid bucket.

The rules are data (`RULES`, ordered, first match wins). Each matches on any of the reply
code (exact "550" or class "5"), the enhanced status code (exact "5.1.1", prefix "5.7.", or
"X.2.2" for either class, as RFC 3463 writes them) and a case-insensitive regex over the
text; what a rule names must all match. Text rules come first because providers misuse codes
(Gmail answers 5.7.1 or 5.2.1 for a recipient receiving too fast; Orange 5.1.1 for a full
mailbox; Yandex 5.7.1 for an unknown user); the RFC 3463 and RFC 5321 code fallbacks come
last, and a catch-all ends the table, so every reply gets a rule name.

Kinds (what the failure means for the address):
- hard: the receiver said permanently (5xx) that the mailbox or domain does not exist, or that
  the mailbox is disabled for good; the address is suppressed.
- soft: the address is not at fault: mailbox full, greylisting, a temporary or technical
  failure (network, DNS, size limits, protocol). Never suppressed.
- block: the receiver refuses the sender or the message: reputation, blocklists, content,
  authentication (SPF/DKIM/DMARC, reverse DNS, TLS), sender rate limits, other policy.
  Never suppressed (SendGrid reports these as "blocked").
- unknown: no rule recognised the reply.

Two guards apply after matching, whatever the rule said:
- a transient reply (4xx) never proves an address invalid (RFC 5321 §4.2.1): hard becomes
  soft, and the bucket Invalid Address becomes Mailbox Unavailable;
- a security or policy status (X.7.x, RFC 3463 §3.8) never suppresses, even when its text reads
  like an unknown user: hard becomes block.

A 2xx reply is a delivery, not a failure: `classify` raises ValueError for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from app.delivery.replies import Reply


class BounceKind(StrEnum):
    """What a failure means for the recipient address."""

    HARD = "hard"
    SOFT = "soft"
    BLOCK = "block"
    UNKNOWN = "unknown"


class Bucket(StrEnum):
    """SendGrid's `bounce_classification` values, spelled exactly as SendGrid spells them."""

    INVALID_ADDRESS = "Invalid Address"
    MAILBOX_UNAVAILABLE = "Mailbox Unavailable"
    REPUTATION = "Reputation"
    CONTENT = "Content"
    FREQUENCY = "Frequency or Volume Too High"
    TECHNICAL = "Technical Failure"
    UNCLASSIFIED = "Unclassified"


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one failure reply; `rule` names the rule that decided it."""

    kind: BounceKind
    bucket: Bucket
    rule: str


def _status_matches(pattern: str, status: str) -> bool:
    """`5.1.1` exact, `5.7.` prefix, `X.2.2` / `X.4.` for either class (RFC 3463 notation)."""
    if pattern.startswith("X."):
        pattern, status = pattern[2:], status[2:]
    return status.startswith(pattern) if pattern.endswith(".") else status == pattern


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: every condition given must hold."""

    name: str
    kind: BounceKind
    bucket: Bucket
    text: str | None = None
    enhanced: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        """Compile the text pattern once."""
        regex = re.compile(self.text, re.IGNORECASE) if self.text else None
        object.__setattr__(self, "_regex", regex)

    def matches(self, code: int, status: str | None, text: str) -> bool:
        """Whether the reply code, enhanced status and text all fit this rule."""
        if self.codes and not str(code).startswith(self.codes):
            return False
        if self.enhanced and not (
            status and any(_status_matches(p, status) for p in self.enhanced)
        ):
            return False
        return self._regex is None or self._regex.search(text) is not None


def _any(*alternatives: str) -> str:
    """One regex matching any of the alternatives."""
    return "|".join(f"(?:{alternative})" for alternative in alternatives)


# Short names keep the table below readable.
HARD, SOFT, BLOCK, UNKNOWN = BounceKind.HARD, BounceKind.SOFT, BounceKind.BLOCK, BounceKind.UNKNOWN
INVALID, UNAVAILABLE = Bucket.INVALID_ADDRESS, Bucket.MAILBOX_UNAVAILABLE
REPUTATION, CONTENT, FREQUENCY = Bucket.REPUTATION, Bucket.CONTENT, Bucket.FREQUENCY
TECHNICAL, UNCLASSIFIED = Bucket.TECHNICAL, Bucket.UNCLASSIFIED

_SENDER_REJECTED = _any(
    r"sender verify",  # Exim: "Verification failed for <x> ... Sender verify failed"
    r"verification failed for",
    r"sender address rejected",  # Postfix: our MAIL FROM, not the recipient
    r"unresolvable rfc\.?5321",  # Yahoo: MAIL FROM domain does not resolve
    r"envelope sender domain",
    r"domain of sender address",
)
_RECIPIENT_RECEIVING_RATE = _any(
    r"receiving mail (?:too quickly|at a rate)",  # Gmail 4.2.1/5.2.1, Yahoo
    r"recipient has exceeded",  # Microsoft 5.2.122, Yandex 4.2.1
    r"message receive limit",
    r"queue quota exceeded",  # Exchange Online: the receiving organisation is flooded
    r"messages to \S+ deferred due to excessive volume",  # iCloud
)
_AUTHENTICATION = _any(
    r"\bdmarc\b",
    r"unauthenticated",
    r"sender policy framework",
    r"\b(?:spf|dkim)\b[^.]{0,60}\b(?:fail\w*|pass\w*|invalid|violation|record)",
    r"authenticate (?:with|their)",  # Gmail/Yahoo: "requires all senders to authenticate with"
)
_REVERSE_DNS_OR_HELO = _any(
    r"\bptr\b", r"reverse (?:dns|hostname)", r"cannot find your hostname", r"\bhelo\b", r"\behlo\b"
)
_MAILBOX_FULL = _any(
    r"over ?quota",
    r"quota (?:exceeded|violation)",
    r"exceeded storage allocation",  # RFC 5321 §4.2.3 text for 552
    r"mailbox (?:is )?full",
    r"out of storage space",
    r"mailbox size limit",
    r"boite du destinataire pleine",
    r"(?:disk|mailbox|storage) quota",  # "Status: 5.0.0 (recipient reached disk quota)"
    r"exceed\w* (?:\w+ )?quota",  # "This person's account is exceeding their quota"
)
_MAILBOX_DISABLED = _any(
    r"(?:account|mailbox)\b[^.;]{0,40}\b(?:disabled|inactive|deactivated|discontinued|"
    r"suspended|terminated|closed)\b",
    r"no longer accepts mail",
)
_NULL_MX = _any(r"null ?mx", r"(?:does not|doesn't) accept mail", r"accepts no mail")
_DOMAIN_NOT_FOUND = _any(
    r"domain not found",
    r"no such domain",
    r"nxdomain",
    r"host or domain name not found",
    r"able to find the recipient domain",  # Gmail 5.1.2
)
_UNKNOWN_RECIPIENT = _any(
    r"user unknown",
    r"unknown (?:user|recipient)",
    r"addressee unknown",
    r"no such (?:user|mailbox|recipient|person)",
    r"(?:does not|doesn't|did not) exist",
    r"(?:user|mailbox|recipient|address) not found",
    r"invalid[- ](?:recipient|mailbox|address)",
    r"marked as invalid",
    r"not a valid (?:rfc.?5321 address|email address|mailbox|user)",
    r"doesn't have an? \S+ account",  # Yahoo "dd This user doesn't have a yahoo.com account"
    r"is no longer valid",
    r"no longer on (?:server|system)",
    r"not our customer",
    r"mailbox unallocated",
    r"mailbox unavailable",  # RFC 5321 §4.2.3 text for 550; Outlook S2017, web.de
    r"unrouteable address",  # Exim: no router accepted the address
    r"(?<!sender )address rejected(?!:)",  # "550 #5.1.0 Address rejected." (never Postfix's "...:")
    r"inactive email address",
    r"unknown or illegal alias",
)
_CONTENT = _any(
    r"likely unsolicited mail",  # Gmail: a verdict on this message
    r"nature of the content",
    r"content (?:presents|examination)",
    r"(?:spam|banned) (?:url|content)",
    r"url in (?:this|your)",
    r"spam message",
    r"(?:flagged|classified|rejected) as spam",
    r"suspicion of spam",
    r"per spam policy",
    r"spam or virus",
    r"virus",
    r"malware",
    r"phishing",
    r"attachment",
    r"\[PH01\]",  # Yahoo: phishing-like content
    r"rfc ?5322",
    r"rfc compliant",
    r"missing a valid",
    r"message filtered",
    r"domain present in the spamhaus dbl",  # a domain in the message body
)
_BLOCKLISTED = _any(
    r"block ?list",
    r"black ?list",
    r"blocked using",
    r"spamhaus",
    r"spamcop",
    r"barracuda",
    r"proofpoint",
    r"ipcheck",
    r"dnsbl",
    r"\brbl\b",
)
_POOR_REPUTATION = _any(
    r"reputation",
    r"complaints",
    r"unsolicited",
    r"banned",
    r"too many spams",
    r"\[TSS\d+\]",  # Yahoo: reputation-driven deferral of the sending IP
    r"permanently deferred",
    r"(?:traffic|connections) (?:will )?not (?:be )?accepted from",
)
_SENDER_RATE = _any(
    r"rate.?limit",
    r"too many (?:connections|concurrent|messages|mails|emails|sessions)",
    r"maximum number of (?:concurrent )?connections",
    r"exceeded (?:permitted|the allowed) limits",
    r"excessive volume",
    r"unexpected volume",
)
_TRANSACTION_LIMIT = _any(
    r"too many recipients", r"max(?:imum)? (?:number of )?messages? per connection"
)
_RELAY_DENIED = _any(
    r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|disallowed)",
    r"unable to relay",
    r"as a relay",
    r"open relay",
    r"allowed rcpthosts",
)
_POLICY = _any(
    r"\bpolic(?:y|ies)\b",
    r"prohibit",
    r"access denied",
    r"administratively",
    r"\bblock(?:ed)?\b",
    r"\bdenied\b",
    r"\brefused?\b",
    r"spam",
)
_MESSAGE_TOO_BIG = _any(
    r"message (?:size|length) exceeds",
    r"exceed\w* \S+ (?:message )?size",
    r"size limit",
    r"too (?:big|large)",
    r"maximum (?:email|message) size",
)
_ROUTING = _any(
    r"unable to route", r"no route", r"mail loop", r"routing loop", r"hop count", r"\bdns\b"
)
_TEMPORARY = _any(
    r"temporar(?:y|ily)",
    r"try (?:again )?later",
    r"server busy",
    r"insufficient system",
    r"not available",
    r"unavailable",
    r"configuration error",
    r"local problem",
)

RULES: tuple[Rule, ...] = (
    # --- The receiver refuses our side: envelope sender, identity, connection -------------
    # Before the recipient rules: Exim's sender verification quotes "User unknown".
    Rule("sender-rejected", BLOCK, TECHNICAL, text=_SENDER_REJECTED),
    # RFC 3463 §3.2: X.1.7 bad sender's mailbox syntax, X.1.8 bad sender's system address.
    Rule("sender-address-status", BLOCK, TECHNICAL, enhanced=("X.1.7", "X.1.8")),
    # A recipient receiving too much: Gmail uses 5.2.1 and 5.7.1 for it (not reputation).
    Rule("recipient-receiving-rate", SOFT, FREQUENCY, text=_RECIPIENT_RECEIVING_RATE),
    # Gmail 4.7.28: before the authentication rule ("... from your DKIM domain").
    Rule("unusual-rate-unsolicited", BLOCK, REPUTATION, text=r"unusual rate of unsolicited"),
    Rule("unusual-rate", BLOCK, FREQUENCY, text=r"unusual rate of mail"),
    # Before the rate rules: Gmail "rate limited because DKIM authentication didn't pass".
    Rule("authentication-failed", BLOCK, TECHNICAL, text=_AUTHENTICATION),
    # RFC 7372 §3: X.7.20-X.7.26 email authentication failures; RFC 7505 §4.2: X.7.27 null MX.
    Rule(
        "authentication-status",
        BLOCK,
        TECHNICAL,
        enhanced=tuple(f"X.7.{detail}" for detail in range(20, 28)),
    ),
    Rule("reverse-dns-or-helo", BLOCK, TECHNICAL, text=_REVERSE_DNS_OR_HELO),
    Rule("tls-required", BLOCK, TECHNICAL, text=r"\b(?:start)?tls\b|encryption"),
    # RFC 3463 registry (RFC 5248): X.7.10 encryption needed.
    Rule("encryption-status", BLOCK, TECHNICAL, enhanced=("X.7.10",)),
    # --- The recipient's mailbox -----------------------------------------------------------
    Rule("greylisted", SOFT, REPUTATION, text=r"gr[ae]y ?list|internal resources? (?:are )?temp"),
    # Before the unknown-user rules: "user unknown or mailbox full" must not suppress.
    Rule("mailbox-full", SOFT, UNAVAILABLE, text=_MAILBOX_FULL),
    Rule(
        "recipient-temporarily-unavailable",
        SOFT,
        UNAVAILABLE,
        text=r"recipient temporarily unavailable|mailbox (?:is )?(?:busy|temporarily)",
    ),
    Rule(
        "recipient-verification-pending",
        SOFT,
        TECHNICAL,
        text=r"unverified address|verification in progress",
    ),
    Rule("mailbox-disabled", HARD, UNAVAILABLE, text=_MAILBOX_DISABLED),
    # RFC 7505 §3: a null MX domain accepts no mail.
    Rule("domain-accepts-no-mail", HARD, INVALID, text=_NULL_MX),
    Rule("domain-not-found", HARD, INVALID, text=_DOMAIN_NOT_FOUND),
    # Exchange Online Directory-Based Edge Blocking: 5.4.1 "Access denied" = no such recipient.
    Rule(
        "recipient-not-in-directory",
        HARD,
        INVALID,
        enhanced=("5.4.1",),
        text=r"recipient address rejected: access denied",
    ),
    Rule("mailbox-does-not-exist", HARD, INVALID, text=_UNKNOWN_RECIPIENT),
    # --- The receiver refuses the sender or the message ------------------------------------
    # Size before content: Gmail's size reply points to "Send attachments with your Gmail".
    Rule("message-too-big", SOFT, TECHNICAL, text=_MESSAGE_TOO_BIG),
    Rule("content-rejected", BLOCK, CONTENT, text=_CONTENT),
    Rule("blocklisted", BLOCK, REPUTATION, text=_BLOCKLISTED),
    # Before the rate rules: "rate limited due to IP reputation" is about reputation.
    Rule("poor-reputation", BLOCK, REPUTATION, text=_POOR_REPUTATION),
    Rule("transaction-limit", SOFT, FREQUENCY, text=_TRANSACTION_LIMIT),
    Rule("sender-rate-limited", BLOCK, FREQUENCY, text=_SENDER_RATE),
    # Before the policy rule: "Relay access denied" means a misrouted domain, not a verdict.
    Rule("relay-denied", SOFT, TECHNICAL, text=_RELAY_DENIED),
    Rule("policy-rejection", BLOCK, REPUTATION, text=_POLICY),
    # Exchange Online 4.7.500-699 "(ASnnn)": the sending IP is throttled for suspicious traffic.
    Rule("sending-ip-throttled", BLOCK, REPUTATION, enhanced=("4.7.",), text=r"\(AS\d+\)"),
    Rule("routing-failure", SOFT, TECHNICAL, text=_ROUTING),
    Rule("temporary-failure", SOFT, TECHNICAL, text=_TEMPORARY),
    # --- RFC 3463 enhanced status codes, when no text rule decided --------------------------
    # §3.2 addressing status: X.1.1 bad mailbox, X.1.2 bad system, X.1.3 bad mailbox syntax,
    # X.1.6 mailbox moved; RFC 7505 §4.1: X.1.10 recipient domain has a null MX.
    Rule(
        "bad-destination-address",
        HARD,
        INVALID,
        enhanced=("X.1.1", "X.1.2", "X.1.3", "X.1.6", "X.1.10"),
    ),
    # §3.3 mailbox status: X.2.2 mailbox full; X.2.0 other, X.2.1 disabled ("may be permanent
    # or transient", so never suppressed on the code alone).
    Rule("mailbox-full-status", SOFT, UNAVAILABLE, enhanced=("X.2.2",)),
    Rule("mailbox-status", SOFT, UNAVAILABLE, enhanced=("X.2.0", "X.2.1")),
    # X.2.3 message length exceeds administrative limit; §3.4 X.3.4 message too big for system.
    Rule("message-too-big-status", SOFT, TECHNICAL, enhanced=("X.2.3", "X.3.4")),
    # §3.6 X.5.3 too many recipients.
    Rule("too-many-recipients-status", SOFT, FREQUENCY, enhanced=("X.5.3",)),
    # §3.8 security or policy status: permanent is a block, transient a temporary policy.
    Rule("security-or-policy-status", BLOCK, REPUTATION, enhanced=("5.7.",)),
    Rule("temporary-policy-status", SOFT, REPUTATION, enhanced=("4.7.",)),
    # §3.3-§3.7: mailing list (X.2.4), mail system, network/routing, protocol, media problems.
    Rule(
        "system-status",
        SOFT,
        TECHNICAL,
        enhanced=("X.2.4", "X.3.", "X.4.", "X.5.", "X.6."),
    ),
    # --- RFC 5321 §4.2.3 reply codes, when nothing else decided -----------------------------
    Rule("service-not-available", SOFT, TECHNICAL, codes=("421",)),
    Rule("mailbox-busy", SOFT, UNAVAILABLE, codes=("450",)),
    Rule("local-error", SOFT, TECHNICAL, codes=("451", "452")),
    Rule("storage-exceeded", SOFT, UNAVAILABLE, codes=("552",)),
    Rule("transient-unclassified", SOFT, UNCLASSIFIED, codes=("4",)),
    Rule("unclassified", UNKNOWN, UNCLASSIFIED),
)

# An enhanced code given later in the text: "(#5.1.1)", "cuda_nsu 5.1.1 <x>", Exim callouts.
# The lookahead keeps dotted quads and version strings ("4.16.55.1") out.
_EMBEDDED_STATUS = re.compile(r"(?:^|[\s(#])([245]\.\d{1,3}\.\d{1,3})(?=[\s),;:]|\.(?:\s|$)|$)")


def _status_of(reply: Reply) -> str | None:
    """The reply's enhanced status code, also when it appears later in the text."""
    if reply.enhanced is not None:
        return reply.enhanced
    found = _EMBEDDED_STATUS.search(reply.text)
    return found.group(1) if found else None


def classify(reply: Reply, *, rules: Sequence[Rule] = RULES) -> Classification:
    """Sort a failure reply into a bounce kind and a SendGrid bucket (first matching rule)."""
    if reply.is_success:
        raise ValueError(f"a 2xx reply is a delivery, not a failure: {reply}")
    status = _status_of(reply)
    rule = next((r for r in rules if r.matches(reply.code, status, reply.text)), None)
    if rule is None:
        return Classification(UNKNOWN, UNCLASSIFIED, "unclassified")
    return _guarded(Classification(rule.kind, rule.bucket, rule.name), reply, status)


def _guarded(verdict: Classification, reply: Reply, status: str | None) -> Classification:
    """Apply the two no-suppression guards to a hard verdict."""
    if verdict.kind is not HARD:
        return verdict
    if not reply.is_permanent:
        # RFC 5321 §4.2.1: a 4yz reply is transient; it cannot prove the address invalid.
        bucket = UNAVAILABLE if verdict.bucket is INVALID else verdict.bucket
        return Classification(SOFT, bucket, verdict.rule)
    if status is not None and status[2:].startswith("7."):
        # RFC 3463 §3.8: X.7.x is a security or policy refusal, which may be lifted.
        return Classification(BLOCK, verdict.bucket, verdict.rule)
    return verdict


def suppresses(classification: Classification) -> bool:
    """Whether this failure suppresses the address for the account (hard bounces only)."""
    return classification.kind is BounceKind.HARD
