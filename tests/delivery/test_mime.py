"""Tests for app.delivery.mime: structure, round-trips, determinism and wire safety."""

from __future__ import annotations

import dataclasses
import email.policy
import email.utils
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.delivery import mime
from app.delivery.content import Address, Attachment, MessageContent
from app.delivery.mime import needs_smtputf8, render

BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8

BASE = MessageContent(
    message_id="<0195f3c2-7d1e-7a4b-9c1d-2f6a8b9e0c11@mail.example.com>",
    date=datetime(2026, 11, 28, 15, 46, 5, tzinfo=UTC),
    sender=Address("noreply@example.com", "Example Shop"),
    subject="Your order #123 has shipped",
    to=(Address("alice@example.org", "Alice Example"),),
    text="Hello Alice,\n\nYour order has shipped.\n",
)


def make(**changes: Any) -> MessageContent:
    """Return BASE with some fields replaced."""
    return dataclasses.replace(BASE, **changes)


def parse(raw: bytes) -> EmailMessage:
    """Parse rendered bytes with the modern policy, as a receiving client would."""
    return BytesParser(policy=email.policy.default).parsebytes(raw)


def header_block(raw: bytes) -> bytes:
    """Return the top-level header section of a message."""
    return raw.split(b"\r\n\r\n", 1)[0]


def count_fields(raw: bytes, name: str) -> int:
    """Count top-level header fields called `name` (case-insensitive)."""
    pattern = re.compile(rb"^" + re.escape(name.encode()) + rb":", re.IGNORECASE | re.MULTILINE)
    return len(pattern.findall(header_block(raw)))


def assert_wire_safe(raw: bytes) -> None:
    """No bare CR/LF, no line over 998 octets, CRLF-terminated (RFC 5322 §2.1.1, §2.3)."""
    assert not BARE_CR_OR_LF.search(raw)
    assert raw.endswith(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def body_text(part: object) -> str:
    """Decoded text of a part with line ends as "\n" (the parser keeps the wire's CRLF)."""
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def parts(msg: EmailMessage) -> list[str]:
    """Return the content types of a message tree in depth-first order."""
    return [part.get_content_type() for part in msg.walk()]


# --- headers ---------------------------------------------------------------------------------


def test_required_headers_appear_exactly_once() -> None:
    """Date, From, Message-ID, MIME-Version and Subject occur once each (CHECKLIST 30)."""
    raw = render(make(cc=(Address("carol@example.org"),), reply_to=(Address("help@example.com"),)))
    for name in ("Date", "From", "Message-ID", "MIME-Version", "Subject", "To", "Cc", "Reply-To"):
        assert count_fields(raw, name) == 1, name
    assert count_fields(raw, "Bcc") == 0


def test_header_values_round_trip() -> None:
    """Date, Message-ID, subject and addresses parse back to what was given."""
    msg = parse(render(make(cc=(Address("carol@example.org", "Carol"),))))
    assert msg["Date"] == email.utils.format_datetime(BASE.date)
    assert msg["Date"].datetime == BASE.date
    assert msg["Message-ID"] == BASE.message_id
    assert msg["MIME-Version"] == "1.0"
    assert msg["Subject"] == BASE.subject
    assert [(a.display_name, a.addr_spec) for a in msg["From"].addresses] == [
        ("Example Shop", "noreply@example.com")
    ]
    assert msg["To"].addresses[0].addr_spec == "alice@example.org"
    assert msg["Cc"].addresses[0].display_name == "Carol"


def test_date_keeps_its_offset() -> None:
    """A non-UTC accept time is written with its own offset."""
    date = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    assert b"\r\nDate: Fri, 02 Jan 2026 03:04:05 -0500\r\n" in b"\r\n" + render(make(date=date))


def test_empty_optional_address_fields_are_omitted() -> None:
    """To, Cc and Reply-To are left out when empty."""
    raw = render(make(to=()))
    for name in ("To", "Cc", "Reply-To"):
        assert count_fields(raw, name) == 0


def test_many_recipients_stay_separate_addresses() -> None:
    """A long address list folds between addresses and parses back to every mailbox."""
    to = tuple(Address(f"user{i}@example.org", f"Ünïcødé User, {i}") for i in range(30))
    raw = render(make(to=to))
    assert_wire_safe(raw)
    # CPython gh-100884 would encode the separating comma as "=?utf-8?q?=2C?=".
    assert b"?=2C?=" not in raw
    parsed = parse(raw)["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in parsed] == [(a.name, a.email) for a in to]


def test_custom_headers_are_appended_in_order() -> None:
    """Custom headers follow the standard ones in the order given."""
    headers = (("X-First", "1"), ("Feedback-ID", "a:b:c:columba"), ("X-Last", "3"))
    raw = render(make(headers=headers))
    names = [line.split(b":")[0] for line in header_block(raw).split(b"\r\n")]
    assert [n for n in names if n in (b"X-First", b"Feedback-ID", b"X-Last")] == [
        b"X-First",
        b"Feedback-ID",
        b"X-Last",
    ]
    assert parse(raw)["Feedback-ID"] == "a:b:c:columba"


def test_long_list_unsubscribe_uri_is_not_encoded() -> None:
    """A long List-Unsubscribe URI stays literal (RFC 8058), folded only between URIs."""
    uri = "https://example.com/unsubscribe/" + "A1b2" * 40
    value = f"<{uri}>, <mailto:unsub@example.com?subject=u>"
    raw = render(make(headers=(("List-Unsubscribe", value), ("X-Short", "x"))))
    assert_wire_safe(raw)
    assert f"<{uri}>".encode() in raw
    assert b"=?" not in header_block(raw)
    assert parse(raw)["List-Unsubscribe"] == value


def test_overlong_unbreakable_custom_header_is_refused() -> None:
    """A custom value that cannot be folded under 998 octets is an error, not a bad line."""
    with pytest.raises(ValueError, match="longer than 998"):
        render(make(headers=(("X-Token", "t" * 1200),)))


def test_non_ascii_custom_header_is_encoded() -> None:
    """A non-ASCII custom value becomes encoded-words and round-trips."""
    raw = render(make(headers=(("X-Campaign", "Été 2026 — soldes"),)))
    assert raw.isascii()
    assert parse(raw)["X-Campaign"] == "Été 2026 — soldes"


@pytest.mark.parametrize("name", ["Bcc", "date", "From", "Content-Type", "MIME-Version"])
def test_reserved_custom_headers_are_refused(name: str) -> None:
    """Custom headers cannot duplicate fields the renderer owns, nor add Bcc."""
    with pytest.raises(ValueError, match="custom header"):
        render(make(headers=((name, "x@example.com"),)))


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "", "X-Ü"])
def test_invalid_custom_header_names_are_refused(name: str) -> None:
    """Header names must be printable ASCII without colon or space (RFC 5322 §3.6.8)."""
    with pytest.raises(ValueError, match="invalid header name"):
        render(make(headers=((name, "v"),)))


@pytest.mark.parametrize(
    "content",
    [
        make(subject="Hi\r\nBcc: victim@example.org"),
        make(subject="Hi\nthere"),
        make(subject="Hi\0"),
        make(subject="Hi\x0cBcc: victim@example.org"),
        make(subject="Hi\u2028Bcc: victim@example.org"),
        make(headers=(("X-Test", "a\x0bBcc: x@example.org"),)),
        make(headers=(("X-Test", "a\x85Bcc: x@example.org"),)),
        make(sender=Address("noreply@example.com", "Shop\r\nBcc: x@example.org")),
        make(to=(Address("a@example.org\r\nBcc: x@example.org"),)),
        make(headers=(("X-Test", "a\r\nBcc: x@example.org"),)),
        make(attachments=(Attachment("a\r\nb.pdf", "application/pdf", PDF),)),
    ],
)
def test_line_breaks_in_header_text_are_refused(content: MessageContent) -> None:
    """No input can add a header line (CHECKLIST 41)."""
    with pytest.raises(ValueError, match="control characters"):
        render(content)


def test_address_without_at_is_refused() -> None:
    """An address without a domain cannot be rendered."""
    with pytest.raises(ValueError, match="not an email address"):
        render(make(to=(Address("alice"),)))


# --- internationalisation --------------------------------------------------------------------


def test_non_ascii_subject_and_names_are_short_encoded_words() -> None:
    """RFC 2047 encoded-words, each ≤ 75 chars, round-trip to the original (CHECKLIST 31)."""
    subject = "Ваш заказ №123 отправлен — 您的订单已发货 — ¡Tu pedido está en camino! 🚚" * 2
    content = make(
        subject=subject,
        sender=Address("noreply@example.com", "Ëxample Shöp — Ünïcødé, Inc."),
        to=(Address("alice@example.org", "Алиса Пример-Длинное"),),
    )
    raw = render(content)
    assert raw.isascii()
    assert_wire_safe(raw)
    words = ENCODED_WORD.findall(header_block(raw))
    assert len(words) > 3
    assert max(len(w) for w in words) <= 75
    # RFC 2047 §2: a line holding encoded-words is at most 76 characters.
    assert all(len(line) <= 76 for line in header_block(raw).split(b"\r\n") if b"=?" in line)
    msg = parse(raw)
    assert msg["Subject"] == subject
    assert msg["From"].addresses[0].display_name == content.sender.name
    assert msg["To"].addresses[0].display_name == content.to[0].name


def raw_phrase(raw: bytes, name: str) -> str:
    """The undecoded display-name text of the first mailbox in field `name`."""
    unfolded = header_block(raw).replace(b"\r\n ", b" ").decode("ascii")
    line = next(v for v in unfolded.split("\r\n") if v.startswith(name + ":"))
    return line[len(name) + 1 : line.rindex(" <")].strip()


def test_long_display_name_is_split_into_encoded_words() -> None:
    """A name too long for one word is split per RFC 2047, spaces kept inside the words."""
    name = "Ëxample Shöp — Ünïcødé Départment Störe of Lörem Ïpsum"
    raw = render(make(sender=Address("noreply@example.com", name)))
    phrase = raw_phrase(raw, "From")
    assert len(ENCODED_WORD.findall(phrase.encode())) > 1
    assert all(len(w) <= 75 for w in ENCODED_WORD.findall(phrase.encode()))
    # An RFC 2047 §6.2 decoder ignores the space between adjacent words. (Python 3.11's
    # address parser keeps it, giving one extra space at each join: its bug, not ours.)
    assert str(make_header(decode_header(phrase))) == name


# Any text without control characters, which render refuses in headers (tested above); mixes
# of ASCII words, spaces, quotes and specials are drawn often enough to hit every branch.
CHARS = st.one_of(
    st.sampled_from(' "\\,;:<>@()[]=?._-'),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
)
HEADER_TEXT = st.text(alphabet=CHARS, min_size=1, max_size=120)
# Display names as people write them: words separated by single spaces. (Python's address
# parser collapses runs of whitespace inside decoded encoded-words, so those cannot round-trip.)
NAME_WORD = st.text(alphabet=CHARS.filter(lambda c: not c.isspace()), min_size=1, max_size=12)
DISPLAY_NAME = st.lists(NAME_WORD, min_size=1, max_size=6).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(subject=HEADER_TEXT, name=DISPLAY_NAME)
def test_any_subject_and_display_name_round_trip(subject: str, name: str) -> None:
    """Property: arbitrary Unicode subjects and names survive the trip, with short words."""
    raw = render(make(subject=subject, sender=Address("noreply@example.com", name)))
    assert raw.isascii()
    assert_wire_safe(raw)
    assert all(len(w) <= 75 for w in ENCODED_WORD.findall(header_block(raw)))
    msg = parse(raw)
    assert msg["Subject"] == subject
    assert msg["From"].addresses[0].addr_spec == "noreply@example.com"
    phrase = raw_phrase(raw, "From")
    if len(ENCODED_WORD.findall(phrase.encode())) > 1:
        assert str(make_header(decode_header(phrase))) == name
    else:
        assert msg["From"].addresses[0].display_name == name


def test_idna_domains_are_punycode_in_headers() -> None:
    """Internationalised domains are written as A-labels (RFC 5890) in ASCII headers."""
    content = make(
        sender=Address("info@bücher.example", "Bücher"),
        to=(Address("kunde@straße.de"), Address("user@例え.jp")),
    )
    raw = render(content)
    assert raw.isascii()
    assert not needs_smtputf8(content)
    msg = parse(raw)
    assert msg["From"].addresses[0].addr_spec == "info@xn--bcher-kva.example"
    assert [a.domain for a in msg["To"].addresses] == ["xn--strae-oqa.de", "xn--r8jz45g.jp"]


@pytest.mark.parametrize("field", ["sender", "to", "cc", "reply_to"])
def test_needs_smtputf8_detects_utf8_local_parts(field: str) -> None:
    """Any header address with a non-ASCII local part needs SMTPUTF8 (RFC 6531)."""
    address = Address("jörg@example.org")
    value = address if field == "sender" else (address,)
    assert needs_smtputf8(make(**{field: value}))


def test_needs_smtputf8_is_false_for_ascii_local_parts() -> None:
    """Non-ASCII display names and domains alone do not need SMTPUTF8."""
    content = make(to=(Address("user@bücher.de", "Jörg Müller"),), subject="Grüße")
    assert not needs_smtputf8(content)
    assert render(content).isascii()


def test_utf8_local_part_renders_raw_utf8_headers() -> None:
    """An SMTPUTF8 message carries UTF-8 headers (RFC 6532 §3.2) but 7-bit-encoded bodies."""
    content = make(
        to=(Address("jörg@bücher.de", "Jörg Müller"),),
        subject="Grüße aus Köln",
        text="Hallo Jörg\n",
    )
    raw = render(content)
    assert_wire_safe(raw)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert 'To: "Jörg Müller" <jörg@xn--bcher-kva.de>'.encode() in head
    assert "Subject: Grüße aus Köln".encode() in head
    assert body.isascii()
    msg = Parser(policy=email.policy.default).parsestr(raw.decode("utf-8"))
    assert msg["To"].addresses[0].addr_spec == "jörg@xn--bcher-kva.de"
    assert msg["Subject"] == content.subject
    assert body_text(msg) == "Hallo Jörg\n"


# --- determinism -----------------------------------------------------------------------------


def full_content() -> MessageContent:
    """A message using every layer: mixed ⊃ related ⊃ alternative."""
    return make(
        subject="Rechnung für Bestellung №42",
        html='<p>Hallo Jörg</p><img src="cid:logo@example.com">',
        text="Hallo Jörg\n",
        headers=(("List-Unsubscribe", "<https://example.com/u/1>"),),
        attachments=(
            Attachment("logo.png", "image/png", PNG, content_id="logo@example.com"),
            Attachment("Rechnung Nr. 42 – März.pdf", "application/pdf", PDF),
        ),
    )


def test_render_is_deterministic() -> None:
    """Same content, same bytes: retries transmit identical data (CHECKLIST 26)."""
    first = render(full_content())
    assert render(full_content()) == first
    assert render(dataclasses.replace(full_content())) == first


def test_boundaries_are_derived_from_message_id() -> None:
    """Boundaries are not random: fixed per Message-ID and level, different across messages."""
    raw = render(full_content())
    boundaries = re.findall(rb'boundary="([^"]+)"', raw)
    assert len(boundaries) == 3
    assert len(set(boundaries)) == 3
    assert all(b.startswith(b"=_columba_") for b in boundaries)
    other = render(dataclasses.replace(full_content(), message_id="<other@mail.example.com>"))
    assert set(re.findall(rb'boundary="([^"]+)"', other)).isdisjoint(boundaries)


def test_boundary_never_occurs_in_the_text() -> None:
    """If the text happens to contain the derived boundary, another one is chosen."""
    content = make(html="<p>hi</p>")
    boundary = re.findall(rb'boundary="([^"]+)"', render(content))[0].decode()
    tricky = make(html="<p>hi</p>", text=f"look:\n--{boundary}\nstill text\n")
    raw = render(tricky)
    assert re.findall(rb'boundary="([^"]+)"', raw)[0].decode() != boundary
    text_part = next(p for p in parse(raw).walk() if p.get_content_type() == "text/plain")
    assert body_text(text_part) == tricky.text


# --- bodies ----------------------------------------------------------------------------------


def test_long_single_line_html_is_encoded_into_short_lines() -> None:
    """A 5,000-char line with no spaces is quoted-printable, every line short (CHECKLIST 30)."""
    html = "<div>" + "x" * 5000 + "</div>"
    for body in (html, html.replace("x", "é")):
        raw = render(make(html=body, text=None))
        assert_wire_safe(raw)
        assert max(len(line) for line in raw.split(b"\r\n")) <= 78
        assert body_text(parse(raw)) == body + "\n"


def test_lone_cr_and_lf_are_normalised_to_crlf() -> None:
    """Bodies with lone CR, lone LF and CRLF produce only CRLF on the wire."""
    text = "one\rtwo\nthree\r\nfour\n\rfive"
    for body in (text, text + " ünïcødé"):
        raw = render(make(text=body, html=body.replace("o", "<b>o</b>")))
        assert_wire_safe(raw)
        plain = next(p for p in parse(raw).walk() if p.get_content_type() == "text/plain")
        expected = body.replace("\r\n", "\n").replace("\r", "\n")
        assert body_text(plain) == expected + "\n"


def test_lines_starting_with_a_dot_are_kept() -> None:
    """Dot-stuffing is the SMTP client's job: the rendered body keeps leading dots as-is."""
    for text in (".\n.leading dot\n..two dots\n", ".\n.leading dot — ünïcødé\n..two\n"):
        raw = render(make(text=text))
        assert body_text(parse(raw)) == text
    assert b"\r\n.leading dot\r\n" in render(make(text=".\n.leading dot\n"))


def test_ascii_text_is_7bit_and_non_ascii_is_encoded() -> None:
    """ASCII text stays 7bit us-ascii; non-ASCII becomes qp/base64 UTF-8; output stays ASCII."""
    ascii_msg = parse(render(BASE))
    assert ascii_msg["Content-Transfer-Encoding"] == "7bit"
    assert ascii_msg.get_content_charset() == "us-ascii"
    raw = render(make(text="Grüße, Jörg — 你好\n" * 20))
    assert raw.isascii()
    msg = parse(raw)
    assert msg["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert msg.get_content_charset() == "utf-8"
    assert body_text(msg) == "Grüße, Jörg — 你好\n" * 20


def test_nul_in_text_is_quoted_printable() -> None:
    """NUL may not appear in 7bit data (RFC 2045 §2.7)."""
    raw = render(make(text="a\0b\n"))
    assert b"\0" not in raw
    assert parse(raw)["Content-Transfer-Encoding"] == "quoted-printable"
    assert body_text(parse(raw)) == "a\0b\n"


# --- structure -------------------------------------------------------------------------------


def test_text_only_is_a_single_part() -> None:
    """Text alone renders as a single text/plain part."""
    msg = parse(render(BASE))
    assert parts(msg) == ["text/plain"]
    assert body_text(msg) == BASE.text


def test_html_only_is_a_single_part() -> None:
    """HTML alone renders as a single text/html part."""
    msg = parse(render(make(text=None, html="<p>Hi</p>")))
    assert parts(msg) == ["text/html"]
    assert body_text(msg) == "<p>Hi</p>\n"


def test_no_body_at_all_is_an_empty_text_part() -> None:
    """A message with no text, html or attachments still has a (blank) body."""
    assert parts(parse(render(make(text=None)))) == ["text/plain"]


def test_text_and_html_are_alternatives_plain_first() -> None:
    """multipart/alternative with text/plain before text/html (RFC 2046 §5.1.4)."""
    msg = parse(render(make(html="<p>Hello Alice</p>")))
    assert parts(msg) == ["multipart/alternative", "text/plain", "text/html"]
    assert msg.get_body(preferencelist=("html",)) is not None


def test_regular_attachment_makes_multipart_mixed() -> None:
    """Attachments go in multipart/mixed, base64, and round-trip byte for byte."""
    content = make(
        html="<p>Hi</p>",
        attachments=(Attachment("Rechnung – März.pdf", "application/pdf", PDF),),
    )
    raw = render(content)
    assert raw.isascii()
    assert_wire_safe(raw)
    msg = parse(raw)
    assert parts(msg) == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
    ]
    (attachment,) = msg.iter_attachments()
    assert isinstance(attachment, EmailMessage)
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "Rechnung – März.pdf"
    assert attachment.get_content() == PDF


def test_attachments_without_text_are_mixed() -> None:
    """A message of only attachments is multipart/mixed of those attachments."""
    msg = parse(render(make(text=None, attachments=(Attachment("a.pdf", "application/pdf", PDF),))))
    assert parts(msg) == ["multipart/mixed", "application/pdf"]


def test_inline_image_goes_in_multipart_related() -> None:
    """Inline images sit with the html in multipart/related, Content-ID matching cid: (§32)."""
    content = make(
        text="Hi",
        html='<p>Hi</p><img src="cid:logo@example.com">',
        attachments=(Attachment("logo.png", "image/png", PNG, content_id="logo@example.com"),),
    )
    msg = parse(render(content))
    assert parts(msg) == [
        "multipart/related",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
    ]
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert isinstance(image, EmailMessage)
    assert image["Content-ID"] == "<logo@example.com>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == PNG
    html = body_text(msg.get_body(preferencelist=("html",)))
    cids = re.findall(r'src="cid:([^"]+)"', html)
    assert [f"<{cid}>" for cid in cids] == [image["Content-ID"]]


def test_all_three_levels_nest_mixed_related_alternative() -> None:
    """Inline and regular attachments together: mixed ⊃ related ⊃ alternative."""
    msg = parse(render(full_content()))
    assert parts(msg) == [
        "multipart/mixed",
        "multipart/related",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
        "application/pdf",
    ]


def test_inline_attachment_without_html_is_a_plain_attachment_part() -> None:
    """Without html nothing can reference a cid:, so no multipart/related is made."""
    attachment = Attachment("logo.png", "image/png", PNG, content_id="<logo>")
    msg = parse(render(make(attachments=(attachment,))))
    assert parts(msg) == ["multipart/mixed", "text/plain", "image/png"]
    image = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo>"


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("text/csv; charset=utf-8", "text/csv"),
        ("IMAGE/JPEG", "image/jpeg"),
        ("not a type", "application/octet-stream"),
        ("message/rfc822", "application/octet-stream"),
        ("multipart/mixed", "application/octet-stream"),
    ],
)
def test_declared_attachment_types(declared: str, expected: str) -> None:
    """Valid types are kept with parameters; invalid or structural ones become octet-stream."""
    content = make(attachments=(Attachment("f.bin", declared, b"a,b\r\n1,2\r\n"),))
    (attachment,) = parse(render(content)).iter_attachments()
    assert attachment.get_content_type() == expected
    assert attachment.get_payload(decode=True) == b"a,b\r\n1,2\r\n"
    if declared.startswith("text/csv"):
        assert attachment.get_content_charset() == "utf-8"


@pytest.mark.parametrize(
    "filename",
    [
        "Rechnung Nr. 2026-000042 für Bestellung vom 28. November – Kopie (Ärztehaus Süd).pdf",
        'quote " and; semicolon, comma.txt',
        "a" * 150 + ".txt",
    ],
)
def test_awkward_filenames_round_trip(filename: str) -> None:
    """Long, non-ASCII and special-character filenames survive (RFC 2231 where needed)."""
    raw = render(make(attachments=(Attachment(filename, "text/plain", b"x"),)))
    assert raw.isascii()
    assert_wire_safe(raw)
    (attachment,) = parse(raw).iter_attachments()
    assert attachment.get_filename() == filename


# --- golden bytes and the renderer's fast paths ----------------------------------------------

SMALL_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(48))
SMALL_PDF = b"%PDF-1.4\n" + bytes(range(200, 256))
GOLDEN = MessageContent(
    message_id="<01jdx6q2m9y3k8v5t7r4w1z0bn@mail.example.com>",
    date=datetime(2026, 11, 28, 15, 46, 5, tzinfo=UTC),
    sender=Address("noreply@shop.example.com", "Ëxample Shöp"),
    subject="Votre commande n°123 a été expédiée",
    to=(Address("alice@example.org", "Alice Example"), Address("bob@bücher.example")),
    cc=(Address("carol@example.org"),),
    reply_to=(Address("help@shop.example.com", "Help, Desk"),),
    text="Bonjour Alice,\n\nVotre commande a été expédiée.\n.leading dot\nFrom here on\n",
    html=(
        "<p>Bonjour Alice,</p><p>Votre commande a été expédiée et arrivera bientôt chez vous, "
        'suivez-la en ligne.</p><img src="cid:logo@shop.example.com">'
    ),
    headers=(
        ("List-Unsubscribe", "<https://shop.example.com/u/abc123>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("X-Campaign", "Été 2026"),
    ),
    attachments=(
        Attachment("logo.png", "image/png", SMALL_PNG, content_id="logo@shop.example.com"),
        Attachment("Facture n°123 – novembre.pdf", "application/pdf", SMALL_PDF),
        Attachment("orders.csv", "text/csv; charset=utf-8", b"id,total\r\n123,42.00\r\n"),
    ),
)
# Captured from the EmailMessage-based renderer before it moved to compat32 parts: a change
# here changes what is on the wire, so it must be deliberate.
GOLDEN_BYTES = (
    b"Date: Sat, 28 Nov 2026 15:46:05 +0000\r\n"
    b"From: =?utf-8?b?w4t4YW1wbGUgU2jDtnA=?= <noreply@shop.example.com>\r\n"
    b"To: Alice Example <alice@example.org>, bob@xn--bcher-kva.example\r\n"
    b"Cc: carol@example.org\r\n"
    b'Reply-To: "Help, Desk" <help@shop.example.com>\r\n'
    b"Subject: =?utf-8?b?Vm90cmUgY29tbWFuZGUgbsKwMTIzIGEgw6l0w6kgZXhww6lkacOp?=\r\n"
    b" =?utf-8?b?ZQ==?=\r\n"
    b"Message-ID: <01jdx6q2m9y3k8v5t7r4w1z0bn@mail.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"List-Unsubscribe: <https://shop.example.com/u/abc123>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"X-Campaign: =?utf-8?b?w4l0w6kgMjAyNg==?=\r\n"
    b'Content-Type: multipart/mixed; boundary="=_columba_26673ae983618428a948cbe0_0"\r\n'
    b"\r\n"
    b"--=_columba_26673ae983618428a948cbe0_0\r\n"
    b"Content-Type: multipart/related;\r\n"
    b' boundary="=_columba_884be39a827d6f2a934f5aa2_1"\r\n'
    b"\r\n"
    b"--=_columba_884be39a827d6f2a934f5aa2_1\r\n"
    b"Content-Type: multipart/alternative;\r\n"
    b' boundary="=_columba_d8e774a3af960f2367e73b8a_2"\r\n'
    b"\r\n"
    b"--=_columba_d8e774a3af960f2367e73b8a_2\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Bonjour Alice,\r\n"
    b"\r\n"
    b"Votre commande a =C3=A9t=C3=A9 exp=C3=A9di=C3=A9e.\r\n"
    b".leading dot\r\n"
    b"From here on\r\n"
    b"\r\n"
    b"--=_columba_d8e774a3af960f2367e73b8a_2\r\n"
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>Bonjour Alice,</p><p>Votre commande a =C3=A9t=C3=A9 exp=C3=A9di=C3=A9e et =\r\n"
    b'arrivera bient=C3=B4t chez vous, suivez-la en ligne.</p><img src=3D"cid:logo@=\r\n'
    b'shop.example.com">\r\n'
    b"\r\n"
    b"--=_columba_d8e774a3af960f2367e73b8a_2--\r\n"
    b"\r\n"
    b"--=_columba_884be39a827d6f2a934f5aa2_1\r\n"
    b"Content-Type: image/png\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: inline; filename="logo.png"\r\n'
    b"Content-ID: <logo@shop.example.com>\r\n"
    b"\r\n"
    b"iVBORw0KGgoAAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8=\r\n"
    b"\r\n"
    b"--=_columba_884be39a827d6f2a934f5aa2_1--\r\n"
    b"\r\n"
    b"--=_columba_26673ae983618428a948cbe0_0\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment;\r\n"
    b" filename*=utf-8''Facture%20n%C2%B0123%20%E2%80%93%20novembre.pdf\r\n"
    b"\r\n"
    b"JVBERi0xLjQKyMnKy8zNzs/Q0dLT1NXW19jZ2tvc3d7f4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3\r\n"
    b"+Pn6+/z9/v8=\r\n"
    b"\r\n"
    b"--=_columba_26673ae983618428a948cbe0_0\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="orders.csv"\r\n'
    b'Content-Type: text/csv; charset="utf-8"\r\n'
    b"\r\n"
    b"aWQsdG90YWwNCjEyMyw0Mi4wMA0K\r\n"
    b"\r\n"
    b"--=_columba_26673ae983618428a948cbe0_0--\r\n"
)

GOLDEN_UTF8 = MessageContent(
    message_id="<01jdx6q2m9y3k8v5t7r4w1z0bn@mail.example.com>",
    date=datetime(2026, 11, 28, 15, 46, 5, tzinfo=UTC),
    sender=Address("noreply@shop.example.com", "Shop"),
    subject="Grüße aus Köln",
    to=(Address("jörg@bücher.de", "Jörg Müller"),),
    text="Hallo Jörg\n",
    attachments=(Attachment("Grüße.txt", "text/plain", b"hi\n"),),
)
GOLDEN_UTF8_BYTES = (
    "Date: Sat, 28 Nov 2026 15:46:05 +0000\r\n"
    "From: Shop <noreply@shop.example.com>\r\n"
    'To: "Jörg Müller" <jörg@xn--bcher-kva.de>\r\n'
    "Subject: Grüße aus Köln\r\n"
    "Message-ID: <01jdx6q2m9y3k8v5t7r4w1z0bn@mail.example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="=_columba_26673ae983618428a948cbe0_0"\r\n'
    "\r\n"
    "--=_columba_26673ae983618428a948cbe0_0\r\n"
    'Content-Type: text/plain; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Hallo J=C3=B6rg\r\n"
    "\r\n"
    "--=_columba_26673ae983618428a948cbe0_0\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    'Content-Disposition: attachment; filename="Grüße.txt"\r\n'
    "\r\n"
    "aGkK\r\n"
    "\r\n"
    "--=_columba_26673ae983618428a948cbe0_0--\r\n"
).encode()


@pytest.mark.parametrize(
    ("content", "expected"),
    [(GOLDEN, GOLDEN_BYTES), (GOLDEN_UTF8, GOLDEN_UTF8_BYTES)],
    ids=["ascii", "smtputf8"],
)
def test_golden_bytes(content: MessageContent, expected: bytes) -> None:
    """A fixed message renders to exactly the bytes the previous renderer produced."""
    assert render(content) == expected


def test_only_the_top_level_carries_mime_version() -> None:
    """MIME-Version is a message header (RFC 2045 §4): no body part repeats it."""
    raw = render(GOLDEN)
    assert raw.count(b"MIME-Version:") == 1
    msg = parse(raw)
    assert len(parts(msg)) == 8
    for part in list(msg.walk())[1:]:
        assert "MIME-Version" not in part


@contextmanager
def header_registry_only() -> Iterator[None]:
    """Route every field the renderer writes itself through the header registry instead."""
    never = re.compile(r"(?!)")
    with (
        mock.patch.object(mime, "_PLAIN_MESSAGE_ID", never),
        mock.patch.object(mime, "_PLAIN_CONTENT_TYPE", never),
        mock.patch.object(mime, "_plain_attachment_fields", return_value=False),
    ):
        yield


def outcome(operation: Callable[[], bytes]) -> bytes | tuple[str, str]:
    """The bytes an operation returns, or the type and text of the error it raises."""
    try:
        return operation()
    except (ValueError, UnicodeError) as error:
        return type(error).__name__, str(error)


FILENAME = st.one_of(
    st.sampled_from(["logo.png", "Rechnung – März.pdf", "a b  c.txt", "x" * 60 + ".pdf"]),
    st.text(alphabet=CHARS, max_size=80),
)
CONTENT_TYPE = st.one_of(
    st.sampled_from(["image/png", "IMAGE/JPEG", "text/csv; charset=utf-8", "a/b c", "x/y;"]),
    st.from_regex(
        r"[!#$%&'*+.^_`{|}~0-9A-Za-z-]{1,40}/[!#$%&'*+.^_`{|}~0-9A-Za-z-]{1,40}", fullmatch=True
    ),
)
CONTENT_ID = st.one_of(st.none(), st.sampled_from(["logo", "<a;b,c d@x>", "c" * 70]), HEADER_TEXT)
MESSAGE_ID = st.one_of(
    st.from_regex(r"<[A-Za-z0-9._+-]{1,60}@[A-Za-z0-9.-]{1,60}>", fullmatch=True),
    st.sampled_from(["<a b@c>", "<x@[1.2.3.4]>", "bare@example.com", "<a@b>(c)"]),
)


@settings(max_examples=300, deadline=None)
@example(
    filename="0:¡¡¡¡", content_type="image/png", content_id=None, message_id="<x@y>", utf8=False
)
@given(
    filename=FILENAME,
    content_type=CONTENT_TYPE,
    content_id=CONTENT_ID,
    message_id=MESSAGE_ID,
    utf8=st.booleans(),
)
def test_fast_paths_match_the_header_registry(
    filename: str, content_type: str, content_id: str | None, message_id: str, utf8: bool
) -> None:
    """Fields written without the header registry are the bytes the registry would write."""
    attachment = Attachment(filename, content_type, b"data", content_id=content_id)
    content = make(
        message_id=message_id,
        html="<p>Hi</p>",
        to=(Address("jörg@example.org" if utf8 else "joerg@example.org"),),
        attachments=(attachment, dataclasses.replace(attachment, content_id=None)),
    )
    fast = outcome(lambda: render(content))
    with header_registry_only():
        assert outcome(lambda: render(content)) == fast


@pytest.mark.parametrize("html", [None, "<p>Hallo</p>"])
def test_custom_content_headers_survive_the_body(html: str | None) -> None:
    content = MessageContent(
        message_id="<custom-content@columba.test>",
        date=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
        sender=Address("a@sender.test"),
        subject="Hallo",
        to=(Address("b@example.test"),),
        text="Hallo",
        html=html,
        headers=(("Content-Language", "de"), ("X-Campaign", "autumn")),
    )
    parsed = email.message_from_bytes(mime.render(content), policy=email.policy.default)
    assert parsed["Content-Language"] == "de"
    assert parsed["X-Campaign"] == "autumn"
