"""Whatever the send APIs accept renders: every header-bound field the validators let through
can be written by app.delivery.mime (7-bit and SMTPUTF8), so nothing is accepted with 202 and
then deferred for days with 451."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.core import strict_json
from app.core.errors import ApiError
from app.delivery import mime
from app.delivery.content import Address, Attachment, MessageContent
from app.messages.schemas import SendRequest
from app.messages.submission import Submission
from app.sendgrid import translate


# Mostly text the API accepts (no controls), sometimes anything at all (surrogates included:
# the edge, strict JSON, must refuse those itself).
def text(max_size: int) -> st.SearchStrategy[str]:
    """Header-bound text: printable in any script, or any code point."""
    printable = st.characters(codec=None, exclude_categories=("Cc", "Cs"))
    return st.one_of(
        st.text(printable, max_size=max_size),
        st.text(st.characters(codec=None), max_size=max_size),
    )


HEADER_NAMES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
VALUES = st.one_of(
    text(1200),
    st.lists(st.text("ab é", max_size=120), max_size=20).map(" ".join),
    st.text("a ", min_size=900, max_size=1100),
    st.text("aé", min_size=400, max_size=1100),  # no space to fold at
)
EMAILS = st.sampled_from(["a@example.test", "ü@example.test"])  # 7-bit and SMTPUTF8 messages
CONTENT_TYPES = st.one_of(
    st.sampled_from(["text/plain", 'text/plain; charset="utf-8"; name="a b.txt"']), text(255)
)
FILENAMES = st.tuples(text(240), st.sampled_from([".txt", ".pdf", ""])).map("".join)


def accepted(parse: Any, document: dict[str, Any]) -> Submission | None:
    """What the edge makes of `document` (strict JSON, then the API's validation), or None."""
    try:
        return parse(json.dumps(document).encode())  # type: ignore[no-any-return]
    except (ApiError, ValueError):
        return None


def parse_native(raw: bytes) -> Submission:
    """POST /v1/send's validation."""
    return SendRequest.model_validate(strict_json.loads(raw)).submission()


def parse_sendgrid(raw: bytes) -> Submission:
    """POST /v3/mail/send's validation."""
    return translate.to_submission(translate.parse(raw))


def content_of(submission: Submission) -> MessageContent:
    """The first copy of an accepted submission, as the worker renders it."""
    personal = submission.personalizations[0]
    headers = {**submission.headers, **personal.headers}
    return MessageContent(
        message_id="<01m94abc@mta.columba.test>",
        date=datetime(2026, 11, 1, tzinfo=UTC),
        sender=_address(personal.sender or submission.sender),
        subject=personal.subject or submission.subject or "",
        to=tuple(map(_address, personal.to)),
        cc=tuple(map(_address, personal.cc)),
        reply_to=tuple(map(_address, submission.reply_to)),
        text=submission.text,
        html=submission.html,
        headers=tuple(headers.items()),
        attachments=tuple(
            Attachment(f.filename, f.content_type, f.data, f.content_id, f.disposition)
            for f in submission.attachments
        ),
    )


def _address(address: Any) -> Address:
    return Address(email=address.email, name=address.name)


VALID = {
    "subject": "Hello",
    "from_name": "Shop",
    "to_name": "Alice",
    "to": "a@example.test",
    "header": ("X-Order", "1234"),
    "filename": "a.txt",
    "content_type": "text/plain",
    "content_id": "logo",
}
# One field at a time is fuzzed, the others stay valid, so that most requests are accepted.
ONE_FIELD = st.one_of(
    st.fixed_dictionaries({"subject": text(1200)}),
    st.fixed_dictionaries({"from_name": text(300)}),
    st.fixed_dictionaries({"to_name": text(300), "to": EMAILS}),
    st.fixed_dictionaries({"header": st.tuples(HEADER_NAMES, VALUES), "to": EMAILS}),
    st.fixed_dictionaries({"filename": FILENAMES, "to": EMAILS}),
    st.fixed_dictionaries({"content_type": CONTENT_TYPES}),
    st.fixed_dictionaries({"content_id": text(255)}),
).map(lambda fuzzed: {**VALID, **fuzzed})
FILE = base64.b64encode(b"hello").decode()
RUN = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def native(fields: dict[str, Any]) -> dict[str, Any]:
    """A /v1/send body with these fields."""
    header_name, header_value = fields["header"]
    return {
        "from": {"email": "noreply@sender.test", "name": fields["from_name"]},
        "to": [{"email": fields["to"], "name": fields["to_name"]}],
        "subject": fields["subject"],
        "text": "Hello",
        "html": '<img src="cid:logo">',
        "headers": {header_name: header_value},
        "attachments": [
            {
                "content": FILE,
                "filename": fields["filename"],
                "content_type": fields["content_type"],
                "content_id": fields["content_id"],
            }
        ],
    }


def sendgrid(fields: dict[str, Any]) -> dict[str, Any]:
    """A /v3/mail/send body with these fields."""
    header_name, header_value = fields["header"]
    return {
        "personalizations": [
            {
                "to": [{"email": fields["to"], "name": fields["to_name"]}],
                "headers": {header_name: header_value},
            }
        ],
        "from": {"email": "noreply@sender.test", "name": fields["from_name"]},
        "subject": fields["subject"],
        "content": [
            {"type": "text/plain", "value": "Hello"},
            {"type": "text/html", "value": '<img src="cid:logo">'},
        ],
        "attachments": [
            {
                "content": FILE,
                "filename": fields["filename"],
                "type": fields["content_type"],
                "content_id": fields["content_id"],
                "disposition": "inline",
            }
        ],
    }


@RUN
@given(ONE_FIELD)
def test_what_v1_send_accepts_renders(fields: dict[str, Any]) -> None:
    submission = accepted(parse_native, native(fields))
    event("accepted" if submission else "refused")
    if submission is not None:
        mime.render(content_of(submission))


@RUN
@given(ONE_FIELD)
def test_what_v3_mail_send_accepts_renders(fields: dict[str, Any]) -> None:
    submission = accepted(parse_sendgrid, sendgrid(fields))
    event("accepted" if submission else "refused")
    if submission is not None:
        mime.render(content_of(submission))


EDGES = [
    {"subject": "x" * 998},
    {"subject": "=?utf-8?q?look-alike?= " + "ü" * 400},
    {"from_name": '"\\' * 85},
    {"to_name": "é" * 256, "to": "ü@example.test"},
    {"header": ("X-Words", "word " * 300)},
    {"header": ("X-Utf8", "é" * 400), "to": "ü@example.test"},
    {"header": ("List-Unsubscribe", "<https://shop.example/u/" + "a" * 900 + ">")},
    {"filename": "ü" * 250 + ".txt"},
    {"filename": "a b" * 80 + ".pdf"},
    {"content_type": 'text/plain; name="' + "x" * 200 + '"'},
    {"content_id": "a@b" * 80},
]


@pytest.mark.parametrize("fuzzed", EDGES)
@pytest.mark.parametrize(("parse", "body"), [(parse_native, native), (parse_sendgrid, sendgrid)])
def test_edge_values_are_accepted_and_render(fuzzed: dict[str, Any], parse: Any, body: Any) -> None:
    """The limits are the renderer's, not lower: long but foldable values are accepted."""
    submission = accepted(parse, body({**VALID, **fuzzed}))
    assert submission is not None
    mime.render(content_of(submission))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-A\n", "v"),  # `$` matched before a final newline
        ("X-Long", "a" * 1500),  # no space to fold at
        ("X-Blank", "a" + " " * 1200 + "b"),  # blanks never fold
        ("X-Utf8", "é" * 600),  # 1,200 octets as raw UTF-8 in an SMTPUTF8 message
    ],
)
def test_headers_that_cannot_render_are_refused(name: str, value: str) -> None:
    document = {
        "from": "noreply@sender.test",
        "to": ["a@example.test"],
        "subject": "s",
        "text": "t",
        "headers": {name: value},
    }
    assert accepted(parse_native, document) is None
    v3 = {
        "personalizations": [{"to": [{"email": "a@example.test"}]}],
        "from": {"email": "noreply@sender.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "t"}],
        "headers": {name: value},
    }
    assert accepted(parse_sendgrid, v3) is None
