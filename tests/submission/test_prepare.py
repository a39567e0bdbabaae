"""Preparing a submitted message: what is kept byte for byte, what is added or removed
(RFC 6409 §8), and what is refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from app.submission.prepare import Arrival, prepare
from app.submission.replies import Refusal

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AHEAD = timedelta(days=7)
ARRIVAL = Arrival(
    message_id="01JTESTMESSAGE0000000000AB",
    hostname="mta.columba.test",
    helo="erp.client.test",
    client_ip="192.0.2.7",
    received_at=AT,
    tls_version="TLSv1.3",
    tls_cipher="TLS_AES_256_GCM_SHA384",
    tls_bits=256,
)


def refusal(raw: bytes) -> Refusal:
    """The refusal prepare() raises."""
    with pytest.raises(Refusal) as refused:
        prepare(raw, ARRIVAL, max_schedule_ahead=AHEAD)
    return refused.value


def test_headers_are_kept_byte_for_byte_below_our_received() -> None:
    head = (
        b"From: =?utf-8?q?M=C3=BCller?= <Sales@Shop.TEST>\r\n"
        b"To: a@example.test,\r\n  B <b@example.test>\r\n"
        b"Subject: folded\r\n\tsubject\r\n"
        b"X-Custom:   spaced  \r\n"
        b"Message-ID: <own@shop.test>\r\n"
        b"Date: Sun, 1 Mar 2026 11:59:00 +0000\r\n"
    )
    prepared = prepare(head + b"\r\nBody.\r\n", ARRIVAL, max_schedule_ahead=AHEAD)
    received, rest = prepared.data.split(b"\r\nFrom:", 1)
    assert received.decode() == (
        "Received: from erp.client.test ([192.0.2.7])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
        "\tby mta.columba.test (Columba) with ESMTPSA id 01JTESTMESSAGE0000000000AB;\r\n"
        "\tSun, 01 Mar 2026 12:00:00 +0000"
    )
    assert b"From:" + rest == head + b"\r\nBody.\r\n"
    assert prepared.sender.email == "sales@shop.test"  # normalised as the HTTP API does
    assert prepared.sender.name == "Müller"
    assert prepared.subject == "folded subject"
    assert [a.email for a in prepared.to] == ["a@example.test", "b@example.test"]


def test_message_id_and_date_are_added_when_missing() -> None:
    prepared = prepare(b"From: a@shop.test\r\n\r\nHi\r\n", ARRIVAL, max_schedule_ahead=AHEAD)
    assert prepared.data.endswith(
        b"From: a@shop.test\r\n"
        b"Message-ID: <01jtestmessage0000000000ab@mta.columba.test>\r\n"
        b"Date: Sun, 01 Mar 2026 12:00:00 +0000\r\n\r\nHi\r\n"
    )


def test_bcc_return_path_and_smtpapi_are_removed() -> None:
    raw = (
        b"Return-Path: <x@y.test>\r\nFrom: a@shop.test\r\nBcc: hidden@example.test\r\n"
        b"Resent-Bcc: also@example.test\r\nContent-Length: 3\r\n"
        b'X-SMTPAPI: {"category": "c",\r\n "asm_group_id": 3}\r\n\r\nHi\r\n'
    )
    prepared = prepare(raw, ARRIVAL, max_schedule_ahead=AHEAD)
    for name in (b"Return-Path", b"Bcc", b"Resent-Bcc", b"Content-Length", b"X-SMTPAPI"):
        assert b"\r\n" + name + b":" not in prepared.data
    assert prepared.options.categories == ("c",)
    assert prepared.options.asm_group_id == 3


def test_a_message_without_body_gets_one_empty_line() -> None:
    prepared = prepare(
        b"From: a@shop.test\r\nSubject: only headers\r\n", ARRIVAL, max_schedule_ahead=AHEAD
    )
    assert prepared.data.endswith(b"Subject: only headers\r\nMessage-ID: "
                                  b"<01jtestmessage0000000000ab@mta.columba.test>\r\n"
                                  b"Date: Sun, 01 Mar 2026 12:00:00 +0000\r\n\r\n")  # fmt: skip


def test_an_odd_helo_cannot_break_the_received_field() -> None:
    arrival = dataclasses.replace(ARRIVAL, helo="evil (x); by y\u00e9")
    prepared = prepare(b"From: a@shop.test\r\n\r\n", arrival, max_schedule_ahead=AHEAD)
    assert prepared.data.startswith(b"Received: from evil??x???by?y? ([192.0.2.7])\r\n")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: no author\r\n\r\nx\r\n", "no From header field"),
        (b"From: a@shop.test\r\nFrom: b@shop.test\r\n\r\nx\r\n", "2 from header fields"),
        (b"From: a@shop.test, b@shop.test\r\n\r\nx\r\n", "exactly one address"),
        (b"From: a@shop.test\r\nthis is not a header\r\n\r\nx\r\n", "header line 2"),
        (b"From: a@shop.test\r\nSubject: caf\xe9\r\n\r\nx\r\n", "UTF-8 (RFC 6532)"),
        (b"From: a@shop.test\r\nX-SMTPAPI: {\r\n\r\nx\r\n", "X-SMTPAPI: not valid JSON"),
        (b"\r\nx\r\n", "no From header field"),
    ],
)
def test_malformed_messages_are_refused(raw: bytes, expected: str) -> None:
    refused = refusal(raw)
    assert refused.code == 554
    assert expected in refused.text


def test_an_invalid_from_address_is_550_5_1_7() -> None:
    refused = refusal(b"From: <not an address>\r\n\r\nx\r\n")
    assert (refused.code, refused.enhanced) in {(550, "5.1.7"), (554, "5.6.0")}


def test_eight_bit_text_outside_parts_cannot_be_converted() -> None:
    raw = (
        b"From: a@shop.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"pr\xc3\xa9amble\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"
    )
    refused = refusal(raw)
    assert (refused.code, refused.enhanced) == (554, "5.6.3")


def test_eight_bit_attachment_becomes_base64() -> None:
    raw = (
        b"From: a@shop.test\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\n\xff\xfe\x00\x01\r\n--b--\r\n"
    )
    prepared = prepare(raw, ARRIVAL, max_schedule_ahead=AHEAD)
    assert prepared.data.isascii()
    assert b"Content-Transfer-Encoding: base64\r\n\r\n//4AAQ==\r\n" in prepared.data
    assert b"Content-Type: text/plain\r\n\r\nplain ascii\r\n" in prepared.data  # untouched


def test_ipv6_clients_are_address_literals() -> None:
    arrival = dataclasses.replace(ARRIVAL, client_ip="2001:db8::7")
    prepared = prepare(b"From: a@shop.test\r\n\r\n", arrival, max_schedule_ahead=AHEAD)
    assert prepared.data.startswith(b"Received: from erp.client.test ([IPv6:2001:db8::7])\r\n")


def test_display_names_in_the_view_hold_no_control_characters() -> None:
    raw = b"From: =?utf-8?q?Evil=07Bell?= <a@shop.test>\r\n\r\nx\r\n"
    prepared = prepare(raw, ARRIVAL, max_schedule_ahead=AHEAD)
    assert prepared.sender.name == "Evil Bell"
    assert b"From: =?utf-8?q?Evil=07Bell?= <a@shop.test>\r\n" in prepared.data  # kept as sent
    # A From whose encoded name holds a line break is not one the listener can trust.
    refused = refusal(b"From: =?utf-8?q?Evil=0D=0ABcc=3A_x?= <a@shop.test>\r\n\r\nx\r\n")
    assert refused.text == (
        "Bad From header field: invalid arguments; address parts cannot contain CR or LF"
    )


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        # One reader sees me@other.test, another may show ceo@columba.test.
        ("From", "<me@other.test>ceo@shop.test", "Bad From header field: invalid address"),
        ("From", "ceo@shop.test <me@other.test>", "Bad From header field: invalid address"),
        ("From", "Shop <a@shop.test> trailing", "Bad From header field: invalid address"),
        ("From", "<a@shop.test", "Bad From header field: missing trailing '>'"),
        ("From", "team: a@shop.test;", "Bad From header field: a group is not allowed here"),
        ("Sender", "<me@other.test>ceo@shop.test", "Bad Sender header field: invalid address"),
        ("Sender", "a@shop.test, b@shop.test", "Bad Sender header field: it must hold exactly"),
        ("Sender", "not an address", "Bad Sender header field"),
        ("Reply-To", "<me@other.test>ceo@shop.test", "bad Reply-To header field: invalid"),
        ("Reply-To", "help@shop.test <x@other.test>", "bad Reply-To header field: invalid"),
        ("Reply-To", "Last, First <a@shop.test>", "bad Reply-To header field: addr-spec"),
    ],
)
def test_author_fields_are_read_as_strictly_as_the_api_reads_them(
    field: str, value: str, problem: str
) -> None:
    head = f"{field}: {value}\r\n" + ("" if field == "From" else "From: a@shop.test\r\n")
    refused = refusal((head + "\r\nx\r\n").encode())
    assert problem in refused.text
    assert refused.code in (550, 554)


def test_obsolete_but_unambiguous_author_fields_are_read() -> None:
    raw = (
        b"From: John Q. Public <jqp@shop.test>\r\n"
        b'To: "=?utf-8?q?M=C3=BCller?=" <m@example.test>, =?utf-8?q?A?=<a@example.test>\r\n'
        b'Sender: "=?utf-8?q?Desk?=" <@relay.test:desk@shop.test>\r\n'
        b"Reply-To: =?utf-8?q?Help?=<help@shop.test>, team: a@shop.test, b@shop.test;\r\n"
        b"\r\nx\r\n"
    )
    prepared = prepare(raw, ARRIVAL, max_schedule_ahead=AHEAD)
    assert (prepared.sender.email, prepared.sender.name) == ("jqp@shop.test", "John Q. Public")
    assert prepared.sender_field is not None
    assert prepared.sender_field.email == "desk@shop.test"
    assert [a.email for a in prepared.reply_to] == ["help@shop.test", "a@shop.test", "b@shop.test"]
    assert [(a.email, a.name) for a in prepared.to] == [
        ("m@example.test", "Müller"),
        ("a@example.test", "A"),
    ]


@pytest.mark.parametrize(
    "encoded",
    [
        b"=?utf-8?B?gA==?=",  # not UTF-8: decodes to a lone surrogate
        b"=?x-unknown?B?gA==?=",  # an unknown charset: the same
        b"=?utf-8?B?AA==?=",  # NUL
        b"=?utf-8?Q?a=1Bb?=",  # ESC
    ],
)
def test_encoded_words_that_decode_to_no_text_are_stored_as_text(encoded: bytes) -> None:
    raw = (
        b"From: " + encoded + b" <a@shop.test>\r\nTo: " + encoded + b" <b@example.test>\r\n"
        b"Cc: " + encoded + b" <c@example.test>\r\nSubject: x " + encoded + b"\r\n\r\nx\r\n"
    )
    prepared = prepare(raw, ARRIVAL, max_schedule_ahead=AHEAD)
    shown = [
        prepared.subject,
        *(a.name or "" for a in (prepared.sender, *prepared.to, *prepared.cc)),
    ]
    for text in shown:
        text.encode("utf-8")  # no lone surrogate: a database stores it, JSON serialises it
        assert not any(ord(c) < 32 for c in text), text
    assert encoded in prepared.data  # the MIME keeps what the client wrote


def test_a_scheduled_message_without_date_is_dated_at_its_send_at() -> None:
    send_at = AT + timedelta(days=2)
    raw = (
        b"From: a@shop.test\r\n"
        b'X-SMTPAPI: {"send_at": ' + str(int(send_at.timestamp())).encode() + b"}\r\n\r\nHi\r\n"
    )
    prepared = prepare(raw, ARRIVAL, max_schedule_ahead=AHEAD)
    assert b"\r\nDate: Tue, 03 Mar 2026 12:00:00 +0000\r\n" in prepared.data
    assert prepared.options.send_at == send_at
