"""The address fields of a submitted message, read as strictly as the HTTP API reads its JSON.

From, Sender and Reply-To say who a message is from and where replies go, so a value that
readers could take two ways (`<me@other.test>ceo@columba.test`: one parser sees the first
address, a mail client may show the second) is refused rather than guessed at. To and Cc only
feed the message view (the envelope decides who receives the message), so they are read
leniently. Obsolete syntax (RFC 5322 §4.4, such as a period in an unquoted display name) is
still read: mail clients write it, and it is unambiguous.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from email import errors
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import AddressHeader, BaseHeader
from email.message import EmailMessage

from app.common.fields import valid_email
from app.delivery.content import Address
from app.submission.replies import Refusal, refused_content

_MAX_NAME = 256  # messages.from_name
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# Defects that make the addresses ambiguous. Others (obsolete forms, encoded-words that decode
# to another charset's bytes or to control characters) garble a display name at worst, never
# an address, and the view replaces what no column stores.
_STRUCTURAL = (errors.InvalidHeaderDefect, errors.HeaderMissingRequiredValue)
# ... except encoded-words written without the spaces RFC 2047 §5 asks for, or inside quotes,
# as many mail programs write them: a display name still. Matched by the standard library's
# wording; should it change, such names are refused, never wrongly accepted.
_ENCODED_WORD_QUIRK = re.compile(r"encoded[ -]word")
# Plain mailboxes, `Name Words <local@domain>` or `local@domain` in ASCII dot-atoms, read
# without the email package's parser (the listener's costliest step): for these it always
# finds the same display name and address, and no defect (tests/submission/
# test_addresses_property.py). Anything else (quotes, comments, groups, encoded-words,
# obsolete forms, domain literals, UTF-8) goes to the parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
PLAIN_ADDRESS = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@{_ATEXT}+(?:\.{_ATEXT}+)*"
_PLAIN_MAILBOX = re.compile(
    rf"[ \t]*(?:(?P<name>{_ATEXT}+(?:[ \t]+{_ATEXT}+)*)[ \t]*<(?P<angled>{PLAIN_ADDRESS})>"
    rf"|(?P<bare>{PLAIN_ADDRESS}))[ \t]*"
)
_FOLDS = re.compile(r"\r|\n")  # what the email package removes to unfold a value


@dataclass(frozen=True, slots=True)
class _Mailbox:
    """A mailbox read without the parser: what HeaderAddress says of it."""

    display_name: str
    addr_spec: str


@functools.lru_cache(maxsize=4096)
def checked_email(value: str) -> str:
    """valid_email, remembered: a message's To addresses were its RCPT addresses a moment
    ago, and one application sends from the same few From addresses all day (a refusal is
    not remembered: it raises)."""
    return valid_email(value)


def author(parsed: EmailMessage) -> Address:
    """The one author in From (DKIM and DMARC align with it), RFC 5322 §3.6.2."""
    found = _strict(parsed, "from", groups=False) or ()
    if len(found) != 1:
        raise refused_content("the From header field must hold exactly one address")
    return _valid(found[0], "From")


def sender(parsed: EmailMessage) -> Address | None:
    """The Sender field's mailbox, when there is one (RFC 5322 §3.6.2: one mailbox)."""
    found = _strict(parsed, "sender", groups=False)
    if found is None:
        return None
    if len(found) != 1:
        raise Refusal(550, "5.1.7", "Bad Sender header field: it must hold exactly one address")
    return _valid(found[0], "Sender")


def reply_to(parsed: EmailMessage) -> tuple[Address, ...]:
    """The Reply-To addresses (an address-list: groups allowed, RFC 5322 §3.6.2)."""
    found = _strict(parsed, "reply-to", groups=True) or ()
    return tuple(_valid(item, "Reply-To") for item in found)


def shown(parsed: EmailMessage, name: str) -> tuple[Address, ...]:
    """The valid addresses of To or Cc, for the message view (recipients come from RCPT)."""
    found = []
    for item in _lenient(parsed, name):
        with contextlib.suppress(ValueError):
            found.append(_address(item))
    return tuple(found)


def view_text(value: str) -> str:
    """Header text as the message view stores it: an encoded-word may decode to any control
    character or to undecodable bytes, which no column stores; the MIME keeps what the client
    wrote."""
    value = _SURROGATES.sub("\ufffd", _CONTROLS.sub(" ", value))
    return " ".join(value.split())


def _strict(
    parsed: EmailMessage, name: str, *, groups: bool
) -> tuple[HeaderAddress | _Mailbox, ...] | None:
    """The addresses of From, Sender or Reply-To (None: no such field); Refusal unless the
    field parses cleanly."""
    plain = _plain(parsed, name)
    if plain is not None:
        return plain
    label = name.title()
    try:
        header = parsed[name]
    except (AttributeError, IndexError, ValueError) as exc:
        raise _bad(label, str(exc)) from None
    if header is None:
        return None
    assert isinstance(header, AddressHeader)
    assert isinstance(header, BaseHeader)
    problems = [defect for defect in header.defects if _is_structural(defect)]
    if problems:
        raise _bad(label, str(problems[0]))
    if not groups and any(group.display_name is not None for group in header.groups):
        raise _bad(label, "a group is not allowed here")
    return tuple(header.addresses)


def _is_structural(defect: errors.MessageDefect) -> bool:
    """True for a defect that leaves it unclear which addresses the field holds."""
    return isinstance(defect, _STRUCTURAL) and not _ENCODED_WORD_QUIRK.search(str(defect))


def _lenient(parsed: EmailMessage, name: str) -> tuple[HeaderAddress | _Mailbox, ...]:
    """The addresses of an address field (groups flattened); none when it does not parse."""
    plain = _plain(parsed, name)
    if plain is not None:
        return plain
    try:
        header = parsed[name]
        return tuple(header.addresses) if header is not None else ()
    except (AttributeError, IndexError, ValueError):
        return ()


def _plain(parsed: EmailMessage, name: str) -> tuple[_Mailbox, ...] | None:
    """The mailboxes of the one `name` field when every one of them is plain (see
    _PLAIN_MAILBOX); None when the parser has to read the field (or there is none)."""
    values = [value for key, value in parsed.raw_items() if key.lower() == name]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    value = _FOLDS.sub("", values[0])
    if not value.isascii() or "=?" in value:
        return None
    found = []
    for item in value.split(","):
        match = _PLAIN_MAILBOX.fullmatch(item)
        if match is None:
            return None
        found.append(_Mailbox(match["name"] or "", match["angled"] or match["bare"]))
    return tuple(found)


def subject(parsed: EmailMessage) -> str:
    """The Subject as the message view stores it (see view_text); a plain ASCII value is
    its own decoding, so it is read without the parser."""
    values = [value for key, value in parsed.raw_items() if key.lower() == "subject"]
    if len(values) == 1 and isinstance(values[0], str):
        value = _FOLDS.sub("", values[0])
        if value.isascii() and "=?" not in value:
            return view_text(value)
    return view_text(str(parsed.get("subject", "")))


def _valid(item: HeaderAddress | _Mailbox, label: str) -> Address:
    """The address, or Refusal naming the field."""
    try:
        return _address(item)
    except ValueError as exc:
        raise _bad(label, str(exc)) from None


def _address(item: HeaderAddress | _Mailbox) -> Address:
    """A header address, normalised as the HTTP API normalises; ValueError when invalid."""
    name = view_text(item.display_name)[:_MAX_NAME].strip()
    return Address(email=checked_email(item.addr_spec), name=name or None)


def _bad(label: str, problem: str) -> Refusal:
    """550 5.1.7 for From and Sender (the originator's address, RFC 3463 X.1.7), 554 5.6.0
    for other fields."""
    if label in ("From", "Sender"):
        return Refusal(550, "5.1.7", f"Bad {label} header field: {problem}")
    return refused_content(f"bad {label} header field: {problem}")
