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
from email.contentmanager import raw_data_manager
from email.errors import MessageError
from email.header import Header
from email.message import EmailMessage, MIMEPart
from email.policy import Compat32, EmailPolicy
from types import MappingProxyType
from typing import ClassVar

import idna

from app.delivery.content import Address, Attachment, MessageContent

__all__ = ["check_attachment", "check_custom_header", "needs_smtputf8", "render"]

# cte_type="7bit": bodies are always qp/base64/7bit, so any server accepts them without 8BITMIME
# (RFC 6152). Messages are built with `_PreFolded` below; this policy's header registry only
# parses and folds the few header values this module does not write itself.
_POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")
# RFC 6532 §3.2: a message whose addresses have UTF-8 local parts carries raw UTF-8 headers.
_POLICY_UTF8 = _POLICY.clone(utf8=True)


class _PreFolded(Compat32):
    """compat32 (no header registry) that writes every stored header value exactly as given.

    EmailPolicy parses every header into a header registry object when it is set and folds it
    again when it is written: most of the cost of rendering a message. Plain string values were
    folded by this module (or are short MIME fields that need no folding) and are written
    verbatim, as EmailPolicy writes `set_raw` values with refold_source="none"; compat32's own
    folder would rewrap them at 78 columns. Header registry objects (the fallbacks for unusual
    attachment fields and Message-IDs) are folded by `header_policy`, as EmailMessage folds them.
    """

    header_policy: ClassVar[EmailPolicy[EmailMessage]] = _POLICY

    def fold(self, name: str, value: str) -> str:
        """Return `name: value` with CRLF line ends, refolding only header registry objects."""
        if isinstance(value, headerregistry.BaseHeader):
            folded: str = self.header_policy.fold(name, value)
            return folded
        return name + ": " + self.linesep.join(value.splitlines()) + self.linesep

    def fold_binary(self, name: str, value: str) -> bytes:
        """The folded field as bytes: ASCII, or UTF-8 for SMTPUTF8 messages (RFC 6532 §3.2)."""
        if isinstance(value, headerregistry.BaseHeader):
            return self.header_policy.fold_binary(name, value)
        return self.fold(name, value).encode("utf-8" if self.header_policy.utf8 else "ascii")


class _PreFoldedUTF8(_PreFolded):
    """`_PreFolded` for messages that carry raw UTF-8 headers."""

    header_policy = _POLICY_UTF8


# Same 7bit rule, 78-column bodies and CRLF as `_POLICY` (the content manager reads them).
_PREFOLDED = _PreFolded(linesep="\r\n", cte_type="7bit", mangle_from_=False)
_PREFOLDED_UTF8 = _PreFoldedUTF8(linesep="\r\n", cte_type="7bit", mangle_from_=False)

# RFC 5322 §2.1.1: a line MUST be no longer than 998 octets (excluding CRLF), SHOULD be <= 78;
# RFC 2047 §2: lines holding encoded-words at most 76, and an encoded-word at most 75 chars.
_MAX_LINE = 998
_RFC_LINE = 78
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
# RFC 2045 §5.1: type "/" subtype without parameters, each a token (printable ASCII except
# blanks and tspecials).
_TOKEN = r"[!#$%&'*+.^_`{|}~0-9A-Za-z-]+"
_PLAIN_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})\Z")
# A msg-id (RFC 5322 §3.6.4) of the kind Columba makes: "<id@host>" in dot-atom text.
_PLAIN_MESSAGE_ID = re.compile(r"<[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+>\Z")


@dataclass(frozen=True, slots=True)
class _Text:
    """A text body part (text/plain, text/html, or another text/* alternative)."""

    subtype: str
    body: str
    params: tuple[tuple[str, str], ...] = ()  # e.g. text/calendar's method=REQUEST


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
    policy = _PREFOLDED_UTF8 if utf8 else _PREFOLDED
    msg = MIMEPart(policy=policy)
    _add_standard_headers(msg, content, utf8)
    # set_content() clears every Content-* field, so custom ones (Content-Language, …)
    # are added once the body is in place; the others keep their place before it.
    late = [(n, v) for n, v in content.headers if n.lower().startswith("content-")]
    for name, value in content.headers:
        if not name.lower().startswith("content-"):
            _add_custom_header(msg, name, value, utf8)
    _fill(msg, _plan(content), policy)
    for name, value in late:
        _add_custom_header(msg, name, value, utf8)
    return msg.as_bytes()


def needs_smtputf8(content: MessageContent) -> bool:
    """True when an address has a non-ASCII local part, which only SMTPUTF8 can carry."""
    return any(not _split_email(a.email)[0].isascii() for a in _all_addresses(content))


# --- headers ---------------------------------------------------------------------------------
#
# Every header is formatted here and stored verbatim (Date, MIME-Version and a plain Message-ID
# are single short values), because EmailPolicy's folder in CPython 3.11 is unreliable for what
# we send:
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


def _add_standard_headers(msg: MIMEPart, content: MessageContent, utf8: bool) -> None:
    """Add Date, From, To, Cc, Reply-To, Subject, Message-ID and MIME-Version, once each."""
    msg["Date"] = email.utils.format_datetime(content.date)
    _add_addresses(msg, "From", (content.sender,), utf8)
    _add_addresses(msg, "To", content.to, utf8)
    _add_addresses(msg, "Cc", content.cc, utf8)
    _add_addresses(msg, "Reply-To", content.reply_to, utf8)
    _check_header_text(content.subject)
    _set_folded(msg, "Subject", _unstructured("Subject", content.subject, utf8))
    _check_header_text(content.message_id)
    msg["Message-ID"] = _message_id(content.message_id)
    msg["MIME-Version"] = "1.0"


def _message_id(message_id: str) -> str:
    """The Message-ID value: verbatim when plain and short, else a header registry object."""
    if _PLAIN_MESSAGE_ID.match(message_id) and len(message_id) <= _RFC_LINE - len("Message-ID: "):
        return message_id
    # Anything else is parsed and folded by the header registry exactly as before (it moves a
    # msg-id of 67-77 characters to a continuation line, and mangles malformed ones).
    header: str = _POLICY.header_factory("Message-ID", message_id)
    return header


def _add_addresses(msg: MIMEPart, name: str, addresses: tuple[Address, ...], utf8: bool) -> None:
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


def check_custom_header(name: str, value: str) -> None:
    """Raise ValueError unless `render` can write this custom header, in a 7-bit message and in
    an SMTPUTF8 one (which one a message is depends on its addresses): the API's validation
    calls this, so that whatever it accepts renders."""
    for utf8, policy in ((False, _PREFOLDED), (True, _PREFOLDED_UTF8)):
        _add_custom_header(MIMEPart(policy=policy), name, value, utf8)


def _add_custom_header(msg: MIMEPart, name: str, value: str, utf8: bool) -> None:
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


def _set_folded(msg: MIMEPart, name: str, folded: str) -> None:
    """Store an already folded value, which `_PreFolded` writes verbatim."""
    if not _fits(name, folded):
        raise ValueError(f"header {name!r} would have a line longer than {_MAX_LINE} octets")
    msg.set_raw(name, folded)


def _check_header_text(value: str) -> None:
    """Reject line breaks and other control characters: they could inject header lines."""
    if _FORBIDDEN_IN_HEADERS.search(value):
        raise ValueError(f"control characters are not allowed in header text: {value!r}")


# --- body structure --------------------------------------------------------------------------


def _plan(content: MessageContent) -> _Text | _Multipart:
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


def _text_nodes(content: MessageContent) -> tuple[_Text | _Multipart, ...]:
    """Return the text body as no node, one text part, or a multipart/alternative of them."""
    parts = tuple(
        _Text(subtype, body)
        for subtype, body in (("plain", content.text), ("html", content.html))
        if body is not None
    ) + tuple(_alternative(kind, body) for kind, body in content.alternatives)
    if len(parts) > 1:
        # RFC 2046 §5.1.4: alternatives are in increasing order of preference, plain first;
        # other types (a text/calendar invitation) follow html, in SendGrid's order.
        return (_multipart(content, "alternative", parts),)
    return parts


def _alternative(content_type: str, body: str) -> _Text:
    """A further text alternative; raises ValueError unless its type is a text/* type."""
    maintype, subtype, params = _content_type(content_type)
    if maintype != "text":
        raise ValueError(f"an alternative body must be text/*, not {content_type!r}")
    # The charset is the one the body is written in (us-ascii or utf-8), never the caller's.
    kept = tuple((name, value) for name, value in params.items() if name.lower() != "charset")
    return _Text(subtype, body, kept)


def check_alternative(content_type: str) -> None:
    """Raise ValueError unless `render` can write a body of this content type (the API's
    validation calls this)."""
    node = _alternative(content_type, "")
    for policy in (_PREFOLDED, _PREFOLDED_UTF8):
        part = MIMEPart(policy=policy)
        try:
            _fill_text(part, node)
            part.as_bytes()
        except (UnicodeError, MessageError) as exc:
            raise ValueError(f"the content type cannot be written: {exc}") from exc


def _multipart(content: MessageContent, subtype: str, children: tuple[_Node, ...]) -> _Multipart:
    """Make a multipart node whose boundary is derived from the Message-ID and nesting level."""
    return _Multipart(subtype, _boundary(content, _LEVELS[subtype]), children)


def _boundary(content: MessageContent, level: int) -> str:
    """Derive a boundary that never changes for this message and does not occur in its text."""
    # "=_" cannot appear in quoted-printable or base64 output, so only 7bit text parts could
    # contain the boundary; RFC 2046 §5.1.1 requires it not to occur in any part.
    texts = [t for t in (content.text, content.html, *(b for _, b in content.alternatives)) if t]
    for attempt in range(100):
        seed = f"{content.message_id}\0{level}\0{attempt}".encode()
        boundary = f"=_columba_{hashlib.sha256(seed).hexdigest()[:24]}_{level}"
        if not any(boundary in text for text in texts):
            return boundary
    raise ValueError("could not find a MIME boundary absent from the message text")


# --- body rendering --------------------------------------------------------------------------
#
# Parts are compat32-policy MIMEParts filled by the same content manager as before (so bodies and
# their transfer encodings are unchanged); their header values are short, fixed-form MIME fields
# that `_PreFolded` writes verbatim. Sub-parts are MIMEParts, not email.mime classes, so they
# carry no MIME-Version (RFC 2045 §4 only requires it at the top level).


def _fill(part: MIMEPart, node: _Text | _Multipart, policy: _PreFolded) -> None:
    """Write one text or multipart node (and its children) into `part`."""
    if isinstance(node, _Multipart):
        _fill_multipart(part, node, policy)
    else:
        _fill_text(part, node)


def _fill_multipart(part: MIMEPart, node: _Multipart, policy: _PreFolded) -> None:
    """Make `part` a multipart with a fixed boundary and render its children into it."""
    part["Content-Type"] = _multipart_type(node)
    for child in node.children:
        part.attach(_child_part(child, policy))


def _child_part(node: _Node, policy: _PreFolded) -> MIMEPart:
    """Return a new body part holding `node`."""
    if isinstance(node, Attachment):
        return _attachment_part(node, policy)
    part = MIMEPart(policy=policy)
    _fill(part, node, policy)
    return part


def _multipart_type(node: _Multipart) -> str:
    """The Content-Type value `multipart/<subtype>; boundary="…"`, folded as before."""
    value = f"multipart/{node.subtype};"
    boundary = f'boundary="{node.boundary}"'
    # CPython's folder leaves a field that fits in 78 characters (RFC 5322 §2.1.1) as it is,
    # else moves the parameter to a continuation line.
    fits = len(f"Content-Type: {value} {boundary}") <= _RFC_LINE
    return value + (" " if fits else "\r\n ") + boundary


def _fill_text(part: MIMEPart, node: _Text) -> None:
    """Set a text body; the 7bit policy picks 7bit, quoted-printable or base64."""
    # The email package splits on CR, LF and CRLF and rejoins with CRLF, so lone CR/LF in the
    # input can never reach the wire as bare CR/LF (RFC 5322 §2.3).
    charset = "us-ascii" if node.body.isascii() else "utf-8"
    # RFC 2045 §2.7: 7bit data may not contain NUL; quoted-printable escapes it.
    cte = "quoted-printable" if "\0" in node.body else None
    part.set_content(
        node.body,
        subtype=node.subtype,
        charset=charset,
        cte=cte,
        params=dict(node.params) or None,
        content_manager=raw_data_manager,
    )


def check_attachment(attachment: Attachment) -> None:
    """Raise ValueError unless `render` can write this attachment's part (filename, type,
    Content-ID), in a 7-bit message and in an SMTPUTF8 one: the API's validation calls this."""
    for policy in (_PREFOLDED, _PREFOLDED_UTF8):
        try:
            _attachment_part(attachment, policy).as_bytes()
        except (
            UnicodeError,
            MessageError,
        ) as exc:  # e.g. a raw non-ASCII type left by the registry
            raise ValueError(f"the attachment cannot be written: {exc}") from exc


def _attachment_part(attachment: Attachment, policy: _PreFolded) -> MIMEPart:
    """Return an attachment part: base64 body, filename, and Content-ID when inline."""
    _check_header_text(attachment.filename)
    maintype, subtype, params = _content_type(attachment.content_type)
    disposition = "inline" if attachment.is_inline else "attachment"
    cid = _content_id(attachment)
    fields_plain = not params and _plain_attachment_fields(
        f"{maintype}/{subtype}", disposition, attachment.filename, cid, policy.header_policy.utf8
    )
    # Unusual fields (parameters, long or non-ASCII filenames, long Content-IDs) are built and
    # folded by the header registry exactly as before: RFC 2231 continuations are its job.
    part = MIMEPart(policy=policy if fields_plain else policy.header_policy)
    part.set_content(
        attachment.data,
        maintype,
        subtype,
        disposition=disposition,
        filename=attachment.filename,
        cid=cid,
        params=dict(params),
        content_manager=raw_data_manager,
    )
    return part


def _plain_attachment_fields(
    content_type: str, disposition: str, filename: str, cid: str | None, utf8: bool
) -> bool:
    """True when the header registry would write these fields exactly as compat32 stores them."""
    if len(f"Content-Type: {content_type}") > _RFC_LINE:
        return False
    if cid is not None and not _plain_token(cid, len("Content-ID: ")):
        return False
    return _plain_filename(disposition, filename, utf8)


def _plain_token(value: str, indent: int) -> bool:
    """True for printable ASCII without blanks or "=?" that fits on its field's line."""
    # The registry's folder turns a token too long for the line into encoded-words, and its
    # parser decodes anything that looks like one (RFC 2047).
    plain = value.isascii() and value.isprintable() and " " not in value and "=?" not in value
    return plain and indent + len(value) <= _RFC_LINE


def _plain_filename(disposition: str, filename: str, utf8: bool) -> bool:
    """True when `disposition; filename=…` needs no re-rendering by the header registry."""
    if not filename or not filename.isprintable() or "=?" in filename:
        return False
    if filename.isascii():
        if '"' in filename or "\\" in filename:
            return False
        param = f'filename="{filename}"'
    else:
        # Non-ASCII names: raw UTF-8 in SMTPUTF8 messages (RFC 6532 §3.2), else RFC 2231 §4
        # encoding, which the registry may fold even below 78 characters (hypothesis found
        # `0:¡¡¡¡`): both are left to it.
        return False
    # A field that fits in 78 characters is left as it is; longer ones are re-rendered.
    return len(f"Content-Disposition: {disposition}; {param}") <= _RFC_LINE


def _content_type(value: str) -> tuple[str, str, MappingProxyType[str, str]]:
    """Parse a declared content type; unparsable or structural types become octet-stream."""
    plain = _PLAIN_CONTENT_TYPE.match(value)
    if plain:
        # The common "type/subtype" without parameters needs no header registry parse.
        maintype, subtype, params = plain[1].lower(), plain[2].lower(), _NO_PARAMS
    else:
        header: headerregistry.BaseHeader = _POLICY.header_factory("Content-Type", value)
        if header.defects or not isinstance(header, headerregistry.ContentTypeHeader):
            return "application", "octet-stream", _NO_PARAMS
        maintype, subtype, params = header.maintype, header.subtype, header.params
    if maintype in _OPAQUE_MAINTYPES:
        return "application", "octet-stream", _NO_PARAMS
    return maintype, subtype, params


def _content_id(attachment: Attachment) -> str | None:
    """Return the Content-ID field value `<cid>` (RFC 2392) for an inline attachment."""
    if attachment.content_id is None:
        return None
    _check_header_text(attachment.content_id)
    return "<" + attachment.content_id.strip("<>") + ">"
