"""Whatever a client submits, prepare() either refuses it (a Refusal, so a permanent or
temporary reply chosen on purpose) or returns what can be stored: no input reaches the
listener's catch-all 451, and no stored field holds a lone surrogate or a NUL."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.submission.prepare import PreparedMessage, prepare
from app.submission.replies import Refusal
from tests.submission.test_prepare import AHEAD, ARRIVAL

_PIECES = st.sampled_from(
    ["a@shop.test", "<", ">", ",", ";", ":", '"', "\\", "(", ")", "@", ".", " ", "\t", "=?",
     "?=", "team:", "x@[1.2.3.4]", "\u00fc", "\u202e", "\r\n ", "NaN", "{", "}", "[", "]"]
)  # fmt: skip
_CHARSETS = st.sampled_from(["utf-8", "utf-16", "iso-8859-1", "x-unknown", "us-ascii", ""])


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """An RFC 2047 encoded-word over arbitrary bytes, in either encoding."""
    raw = draw(st.binary(max_size=12))
    charset = draw(_CHARSETS)
    if draw(st.booleans()):
        return f"=?{charset}?B?{base64.b64encode(raw).decode()}?="
    return f"=?{charset}?Q?{''.join(f'={byte:02X}' for byte in raw)}?="


values = st.lists(
    st.one_of(_PIECES, encoded_words(), st.text(alphabet=st.characters(codec="utf-8"), max_size=8)),
    max_size=12,
).map("".join)
fields = st.sampled_from(["From", "Sender", "Reply-To", "To", "Cc", "Subject", "X-SMTPAPI"])


def storable(text: str) -> None:
    """Fail unless a database stores `text` and JSON serialises it."""
    assert "\x00" not in text
    text.encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(fields, values), max_size=6))
def test_prepare_refuses_or_returns_what_can_be_stored(headers: list[tuple[str, str]]) -> None:
    lines = ["From: a@shop.test"] if all(name != "From" for name, _ in headers) else []
    lines += [f"{name}: {value}" for name, value in headers]
    raw = ("\r\n".join(lines) + "\r\n\r\nBody.\r\n").encode("utf-8", "surrogateescape")
    try:
        prepared = prepare(raw, ARRIVAL, max_schedule_ahead=AHEAD)
    except Refusal:
        return
    assert isinstance(prepared, PreparedMessage)
    storable(prepared.subject)
    people = (
        prepared.sender,
        prepared.sender_field,
        *prepared.to,
        *prepared.cc,
        *prepared.reply_to,
    )
    for person in people:
        if person is not None:
            storable(person.email)
            storable(person.name or "")
    for category in prepared.options.categories:
        storable(category)
    for key, value in prepared.options.unique_args.items():
        storable(key)
        if isinstance(value, str):
            storable(value)
