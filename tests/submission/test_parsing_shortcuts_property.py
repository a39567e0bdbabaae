"""The listener reads plain header fields without the email package's parser; whatever a
client writes, what it reads must be what the parser reads (else a From could be read two
ways), and a message it takes for one text part must be one to the full parser too."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.submission import addresses, parts
from app.submission.prepare import _fields, _parsed_head
from app.submission.protocol import plain_path
from app.submission.replies import Refusal

_ATOMS = st.sampled_from(["a", "Bench", "o'neil", "x_y", "Z9", "=", "?", "{", "~", "-", "#"])
_NOISE = st.sampled_from(
    ["", "", "", " ", "\t", ".", ",", "<", ">", "@", '"', "(", ")", ":", ";", "\\", "=?",
     "?=", "[1.2.3.4]", "\u00fc", "\r\n ", "\r\n\t", "a.", "..", " <", "> "]
)  # fmt: skip
_atom = st.lists(_ATOMS, min_size=1, max_size=3).map("".join)
_dot_atom = st.lists(_atom, min_size=1, max_size=3).map(".".join)
_addr = st.builds(lambda local, domain: f"{local}@{domain}", _dot_atom, _dot_atom)
_spaces = st.sampled_from(["", " ", "  ", "\t", " \t"])


@st.composite
def mailbox(draw: st.DrawFn) -> str:
    """A mailbox, most often plain, sometimes with something odd put in somewhere."""
    address = draw(_addr)
    if draw(st.booleans()):
        phrase = draw(st.lists(_atom, min_size=1, max_size=3))
        text = draw(_spaces).join(phrase) or "x"
        address = f"{text}{draw(_spaces)}<{address}>"
    text = f"{draw(_spaces)}{address}{draw(_spaces)}"
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(_NOISE) + text[at:]


address_values = st.lists(mailbox(), min_size=1, max_size=3).map(",".join)


@st.composite
def path_argument(draw: st.DrawFn) -> str:
    """What follows MAIL FROM: or RCPT TO:, most often plain, sometimes with something odd."""
    text = (
        f"<{draw(_addr)}>{draw(_spaces)}{draw(st.sampled_from(['', 'SIZE=12', 'BODY=8BITMIME']))}"
    )
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(_NOISE) + text[at:]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path_argument(), st.sampled_from([0, 3, 64]))
def test_a_plain_smtp_path_reads_as_aiosmtpd_reads_it(arg: str, limit: int) -> None:
    ours = plain_path(arg, limit)
    if ours is not None:  # else left to aiosmtpd
        server = SimpleNamespace(local_part_limit=limit)
        assert ours == SMTP._getaddr(server, arg)  # type: ignore[arg-type]


def _header(name: str, value: str) -> EmailMessage:
    message = EmailMessage(policy=email.policy.default)
    message.set_raw(name, value)
    return message


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["from", "to", "reply-to"]), address_values)
def test_a_plain_address_field_reads_as_the_parser_reads_it(name: str, value: str) -> None:
    message = _header(name, value)
    plain = addresses._plain(message, name)
    if plain is None:
        return  # left to the parser
    header = email.policy.default.header_fetch_parse(name, value)
    assert not header.defects, header.defects
    assert all(group.display_name is None for group in header.groups)
    parsed = [(addresses.view_text(a.display_name), a.addr_spec) for a in header.addresses]
    assert parsed == [(addresses.view_text(m.display_name), m.addr_spec) for m in plain]


def test_the_usual_fields_are_plain() -> None:
    assert plain_path("<sink7@example.test> SIZE=2048", 0) == ("sink7@example.test", "SIZE=2048")
    assert plain_path("<a@b.test> (comment)", 0) is None
    for value in ("Bench <bench@bench.test>", "sink7@example.test", "A B <a.b@c.test>, d@e.test"):
        assert addresses._plain(_header("to", value), "to") is not None
    for value in ('"Bench" <b@c.test>', "=?utf-8?q?x?= <b@c.test>", "a@[1.2.3.4]", "g: a@b.test;"):
        assert addresses._plain(_header("to", value), "to") is None


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_ATOMS, _NOISE, st.text(max_size=4)), max_size=8).map("".join))
def test_a_plain_subject_reads_as_the_parser_reads_it(value: str) -> None:
    header = email.policy.default.header_fetch_parse("subject", value)
    assert addresses.subject(_header("Subject", value)) == addresses.view_text(str(header))


_NAMES = st.sampled_from(
    ["From", "Subject", "Content-Type", "Content-Disposition", "X-A", "To", "From ", "Subject\t"]
)
_VALUES = st.sampled_from(
    ["a@b.test", "text/plain", "multipart/mixed; boundary=x", "application/pdf",
     "attachment", "inline; filename=a.txt", "message/rfc822", "text/html; name=\"x.exe\"",
     "", "x\x0cy", "x\x1cy", "x\x0by", "\u00fc", "a\r\n b", "a\r\n\tb", "text", "image/png"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_NAMES, _VALUES), min_size=1, max_size=6))
def test_a_head_built_from_our_fields_is_the_parsers(headers: list[tuple[str, str]]) -> None:
    head = "".join(f"{name}:{value}\r\n" for name, value in headers).encode()
    body = b"--x\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--x--\r\n"
    try:
        fields = _fields(head)
    except Refusal:
        return
    parsed, root = _parsed_head(head, fields)
    text = head.decode("utf-8", "surrogateescape") + "\r\n"
    reference = Parser(policy=email.policy.default).parsestr(text, headersonly=True)
    assert list(parsed.raw_items()) == list(reference.raw_items())
    if root is None:
        return  # read by the parser itself
    full = BytesParser(policy=email.policy.compat32).parsebytes(head + b"\r\n" + body)
    assert root.items() == full.items()
    if parts._single_text(root):
        assert not full.is_multipart()
        assert not parts._offered_as_file(full)
