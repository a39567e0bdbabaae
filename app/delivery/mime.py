"""Render a `MessageContent` into RFC 5322 bytes: deterministic, 7-bit safe, CRLF throughout.

The same content always renders to the same bytes (CHECKLIST 26: retries send identical data, so
the DKIM signature and Message-ID stay valid), which is why MIME boundaries are derived from the
Message-ID instead of drawn at random as the `email` package would do.
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import headerregistry
from email.charset import Charset
from email.header import Header
from email.message import EmailMessage, MIMEPart
from types import MappingProxyType

import idna

from app.delivery.content import Address, Attachment, MessageContent

__all__ = ["needs_smtputf8", "render"]

# cte_type="7bit": bodies are always qp/base64/7bit, so any server accepts them without 8BITMIME
# (RFC 6152). refold_source="none": headers set with `set_raw` are written exactly as we folded
# them (see `_set_folded`); headers built by the header registry are still folded by the policy.
_POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")
# RFC 6532 §3.2: a message whose addresses have UTF-8 local parts carries raw UTF-8 headers.
_POLICY_UTF8 = _POLICY.clone(utf8=True)

# RFC 5322 §2.1.1: a line MUST be no longer than 998 octets (excluding CRLF), SHOULD be <= 78;
# RFC 2047 §2: lines holding encoded-words at most 76, and an encoded-word at most 75 chars.
_MAX_LINE = 998
_SOFT_LINE = 76
_MAX_ENCODED_WORD = 75
_UTF8 = Charset("utf-8")
# RFC 5322 §3.6.8: field-name = 1*ftext, printable ASCII except ":".
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")
# Header-bound text must never smuggle a line break (CHECKLIST 41). Besides CR and LF, Python's
# str.splitlines (used when headers are written) also breaks at VT, FF, FS-RS, NEL, U+2028/9;
# the other controls are not allowed in header text at all (RFC 5322 §3.2.5, §3.5).
_FORBIDDEN_IN_HEADERS = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# RFC 5322 §3.2.3: atext words separated by single spaces need no quoting in a phrase.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
# Fields this module writes itself; a custom duplicate would break "exactly one" (CHECKLIST 30)
# or the MIME structure, and Bcc must never be transmitted (RFC 5322 §3.6.3).
_RESERVED_HEADERS = frozenset(
    {
        "date",
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "dkim-signature",
    }
)
# RFC 2046 §5.2.1 forbids base64 for message/*, and multipart/* needs a real structure: such
# declared types are sent as opaque bytes instead.
_OPAQUE_MAINTYPES = frozenset({"multipart", "message"})
_NO_PARAMS: MappingProxyType[str, str] = MappingProxyType({})
# Fixed nesting levels so the three possible boundaries of one message always differ.
_LEVELS = {"mixed": 0, "related": 1, "alternative": 2}


@dataclass(frozen=True, slots=True)
class _Text:
    """A text body part (text/plain or text/html)."""

    subtype: str
    body: str


@dataclass(frozen=True, slots=True)
class _Multipart:
    """A multipart container with its (deterministic) boundary and children."""

    subtype: str
    boundary: str
    children: tuple[_Node, ...]


_Node = _Text | _Multipart | Attachment


def render(content: MessageContent) -> bytes:
    """Return the complete message as bytes with CRLF line endings, identical on every call."""
    utf8 = needs_smtputf8(content)
    msg = EmailMessage(policy=_POLICY_UTF8 if utf8 else _POLICY)
    _add_standard_headers(msg, content, utf8)
    for name, value in content.headers:
        _add_custom_header(msg, name, value, utf8)
    _fill(msg, _plan(content))
    return msg.as_bytes()


def needs_smtputf8(content: MessageContent) -> bool:
    """True when an address has a non-ASCII local part, which only SMTPUTF8 can carry."""
    return any(not _split_email(a.email)[0].isascii() for a in _all_addresses(content))


# --- headers ---------------------------------------------------------------------------------
#
# Every header except Date, Message-ID and MIME-Version is formatted here and stored verbatim
# with `set_raw`, because the policy's folder in CPython 3.11 is unreliable for what we send:
# it may encode the comma between addresses (gh-100884), drop or add the space between
# adjacent encoded-words (gh-92081, gh-144156), emit encoded-words of 76 chars, and turns long
# ASCII tokens such as List-Unsubscribe URIs into encoded-words. A header is built as a list of
# tokens (words, quoted-string pieces, encoded-words, <addr-spec>) that `_fold_tokens` joins
# with single spaces, folding between tokens only, so the text itself is never altered.


def _all_addresses(content: MessageContent) -> Iterable[Address]:
    """Every address that appears in the header (Bcc never does)."""
    yield content.sender
    yield from content.to
    yield from content.cc
    yield from content.reply_to


def _add_standard_headers(msg: EmailMessage, content: MessageContent, utf8: bool) -> None:
    """Add Date, From, To, Cc, Reply-To, Subject, Message-ID and MIME-Version, once each."""
    msg["Date"] = email.utils.format_datetime(content.date)
    _add_addresses(msg, "From", (content.sender,), utf8)
    _add_addresses(msg, "To", content.to, utf8)
    _add_addresses(msg, "Cc", content.cc, utf8)
    _add_addresses(msg, "Reply-To", content.reply_to, utf8)
    _check_header_text(content.subject)
    _set_folded(msg, "Subject", _unstructured("Subject", content.subject, utf8))
    _check_header_text(content.message_id)
    msg["Message-ID"] = content.message_id
    msg["MIME-Version"] = "1.0"


def _add_addresses(
    msg: EmailMessage, name: str, addresses: tuple[Address, ...], utf8: bool
) -> None:
    """Add an address-list field (RFC 5322 §3.4) when there are any addresses."""
    tokens: list[str] = []
    for address in addresses:
        if tokens:
            tokens[-1] += ","
        tokens += _mailbox(address, name, utf8)
    if tokens:
        _set_folded(msg, name, _fold_tokens(name, tokens))


def _mailbox(address: Address, field: str, utf8: bool) -> list[str]:
    """Return the tokens of `name <addr-spec>`, with the domain as an IDNA A-label."""
    _check_header_text(address.email)
    local, domain = _split_email(address.email)
    # The email package quotes a local part that is not a dot-atom.
    spec = headerregistry.Address(username=local, domain=_ascii_domain(domain)).addr_spec
    if not address.name or not address.name.strip():
        return [spec]  # a name of only blanks shows nothing; parsers would not keep it
    _check_header_text(address.name)
    return [*_phrase(address.name, field, utf8), f"<{spec}>"]


def _phrase(name: str, field: str, utf8: bool) -> list[str]:
    """Return a display name as atoms, a quoted-string or encoded-words (RFC 2047 §5(3))."""
    # "=?" is encoded too, or clients would decode a literal look-alike encoded-word.
    if "=?" in name or not name.isprintable() or not (utf8 or name.isascii()):
        single = _UTF8.header_encode(name)
        # One word when it fits: Python's own phrase parser (unlike RFC 2047 §6.2) keeps
        # the folding space between adjacent encoded-words.
        return [single] if len(single) <= _MAX_ENCODED_WORD else _encoded_words(field, name)
    if _ATOMS.match(name):
        return name.split(" ")
    return ('"' + email.utils.quote(name) + '"').split(" ")


def _split_email(addr: str) -> tuple[str, str]:
    """Split an address into local part and domain at the last "@" (RFC 5321 §4.1.2)."""
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an email address: {addr!r}")
    return local, domain


def _ascii_domain(domain: str) -> str:
    """Return the domain as ASCII: internationalised labels become punycode (RFC 5890 §2.3.2.1)."""
    if domain.isascii():
        return domain
    return idna.encode(domain, uts46=True).decode("ascii")


def _unstructured(name: str, value: str, utf8: bool) -> str:
    """Fold unstructured text as is when that round-trips, else as encoded-words (RFC 2047)."""
    # Parsers drop leading/trailing blanks and decode look-alike encoded-words, so such
    # values, non-printable ones, and non-ASCII ones without SMTPUTF8 are encoded.
    plain = "=?" not in value and value.isprintable() and value == value.strip(" ")
    if plain and (utf8 or value.isascii()):
        folded = _fold_tokens(name, value.split(" "))
        if _fits(name, folded):
            return folded
    return _fold_tokens(name, _encoded_words(name, value))


def _encoded_words(name: str, value: str) -> list[str]:
    """Encode text as UTF-8 encoded-words of at most 75 chars (RFC 2047 §2)."""
    # The email package splits between characters and keeps every space inside the words.
    header = Header(value, _UTF8, maxlinelen=_SOFT_LINE, header_name=name)
    return header.encode(linesep="\r\n").split()


def _add_custom_header(msg: EmailMessage, name: str, value: str, utf8: bool) -> None:
    """Append a caller-supplied header, refusing names this module owns and unsafe text."""
    if not _FIELD_NAME.match(name):
        raise ValueError(f"invalid header name: {name!r}")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"header {name!r} cannot be set as a custom header")
    _check_header_text(value)
    # Structured values such as List-Unsubscribe URIs (RFC 8058) must stay literal: they are
    # only folded at spaces, and one that cannot fit is refused rather than encoded.
    plain = utf8 or value.isascii()
    tokens = value.split(" ") if plain else _encoded_words(name, value)
    _set_folded(msg, name, _fold_tokens(name, tokens))


def _fold_tokens(name: str, tokens: list[str]) -> str:
    """Join tokens with spaces, folding before one that would pass column 76 (RFC 5322 §2.2.3)."""
    lines = [name + ":"]
    for token in tokens:
        if _fold_before(lines[-1], token):
            lines.append(" " + token)
        else:
            lines[-1] += " " + token
    folded = "\r\n".join(lines)[len(name) + 1 :]
    # The generator writes "name: " itself; a value folded before its first token keeps CRLF.
    return folded[1:] if folded.startswith(" ") else folded


def _fold_before(line: str, token: str) -> bool:
    """True when `token` should start a new line rather than extend `line`."""
    width = len(line) + 1 + len(token)
    # A token too long for any line is only moved when the line would pass 998 octets; an
    # empty one never is, which would leave a whitespace-only line (RFC 5322 §3.2.2).
    helps = len(token) < _SOFT_LINE or width > _MAX_LINE
    return bool(token) and width > _SOFT_LINE and helps


def _fits(name: str, folded: str) -> bool:
    """True when no line of the field is longer than 998 octets (RFC 5322 §2.1.1)."""
    lines = f"{name}: {folded}".split("\r\n")
    return max(len(line.encode()) for line in lines) <= _MAX_LINE


def _set_folded(msg: EmailMessage, name: str, folded: str) -> None:
    """Store an already folded value verbatim (the policy's refold_source="none" keeps it)."""
    if not _fits(name, folded):
        raise ValueError(f"header {name!r} would have a line longer than {_MAX_LINE} octets")
    msg.set_raw(name, folded)


def _check_header_text(value: str) -> None:
    """Reject line breaks and other control characters: they could inject header lines."""
    if _FORBIDDEN_IN_HEADERS.search(value):
        raise ValueError(f"control characters are not allowed in header text: {value!r}")


# --- body structure --------------------------------------------------------------------------


def _plan(content: MessageContent) -> _Node:
    """Choose the MIME tree: mixed ⊃ related ⊃ alternative, each level only when needed."""
    has_html = content.html is not None
    inline = tuple(a for a in content.attachments if has_html and a.is_inline)
    regular = tuple(a for a in content.attachments if not (has_html and a.is_inline))
    body = _text_nodes(content)
    if inline:
        # RFC 2387: the html and the images it references by cid: travel together.
        body = (_multipart(content, "related", (*body, *inline)),)
    if regular:
        body = (_multipart(content, "mixed", (*body, *regular)),)
    return body[0] if body else _Text("plain", "")


def _text_nodes(content: MessageContent) -> tuple[_Node, ...]:
    """Return the text body as no node, one text part, or a multipart/alternative of both."""
    parts = tuple(
        _Text(subtype, body)
        for subtype, body in (("plain", content.text), ("html", content.html))
        if body is not None
    )
    if len(parts) == 2:
        # RFC 2046 §5.1.4: alternatives are in increasing order of preference, plain first.
        return (_multipart(content, "alternative", parts),)
    return parts


def _multipart(content: MessageContent, subtype: str, children: tuple[_Node, ...]) -> _Multipart:
    """Make a multipart node whose boundary is derived from the Message-ID and nesting level."""
    return _Multipart(subtype, _boundary(content, _LEVELS[subtype]), children)


def _boundary(content: MessageContent, level: int) -> str:
    """Derive a boundary that never changes for this message and does not occur in its text."""
    # "=_" cannot appear in quoted-printable or base64 output, so only 7bit text parts could
    # contain the boundary; RFC 2046 §5.1.1 requires it not to occur in any part.
    texts = [t for t in (content.text, content.html) if t]
    for attempt in range(100):
        seed = f"{content.message_id}\0{level}\0{attempt}".encode()
        boundary = f"=_columba_{hashlib.sha256(seed).hexdigest()[:24]}_{level}"
        if not any(boundary in text for text in texts):
            return boundary
    raise ValueError("could not find a MIME boundary absent from the message text")


# --- body rendering --------------------------------------------------------------------------


def _fill(part: MIMEPart, node: _Node) -> None:
    """Write one node (and its children) into `part`."""
    match node:
        case _Multipart():
            _fill_multipart(part, node)
        case _Text():
            _fill_text(part, node)
        case Attachment():
            _fill_attachment(part, node)


def _fill_multipart(part: MIMEPart, node: _Multipart) -> None:
    """Make `part` a multipart with a fixed boundary and render its children into it."""
    part.add_header("Content-Type", f"multipart/{node.subtype}", boundary=node.boundary)
    for child in node.children:
        sub = MIMEPart(policy=part.policy)
        _fill(sub, child)
        part.attach(sub)


def _fill_text(part: MIMEPart, node: _Text) -> None:
    """Set a text body; the 7bit policy picks 7bit, quoted-printable or base64."""
    # The email package splits on CR, LF and CRLF and rejoins with CRLF, so lone CR/LF in the
    # input can never reach the wire as bare CR/LF (RFC 5322 §2.3).
    charset = "us-ascii" if node.body.isascii() else "utf-8"
    # RFC 2045 §2.7: 7bit data may not contain NUL; quoted-printable escapes it.
    cte = "quoted-printable" if "\0" in node.body else None
    part.set_content(node.body, subtype=node.subtype, charset=charset, cte=cte)


def _fill_attachment(part: MIMEPart, attachment: Attachment) -> None:
    """Set an attachment part: base64 body, filename, and Content-ID when inline."""
    _check_header_text(attachment.filename)
    maintype, subtype, params = _content_type(attachment.content_type)
    part.set_content(
        attachment.data,
        maintype,
        subtype,
        disposition="inline" if attachment.is_inline else "attachment",
        filename=attachment.filename,
        cid=_content_id(attachment),
        params=dict(params),
    )


def _content_type(value: str) -> tuple[str, str, MappingProxyType[str, str]]:
    """Parse a declared content type; unparsable or structural types become octet-stream."""
    header: headerregistry.BaseHeader = _POLICY.header_factory("Content-Type", value)
    if header.defects or not isinstance(header, headerregistry.ContentTypeHeader):
        return "application", "octet-stream", _NO_PARAMS
    if header.maintype in _OPAQUE_MAINTYPES:
        return "application", "octet-stream", _NO_PARAMS
    return header.maintype, header.subtype, header.params


def _content_id(attachment: Attachment) -> str | None:
    """Return the Content-ID field value `<cid>` (RFC 2392) for an inline attachment."""
    if attachment.content_id is None:
        return None
    _check_header_text(attachment.content_id)
    return "<" + attachment.content_id.strip("<>") + ">"
