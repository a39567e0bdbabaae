"""Reading DATA: the end-of-data line, dot-unstuffing, bare line endings, size and line limits,
always reading to the end so that the session stays in step."""

from __future__ import annotations

import asyncio

import pytest

from app.submission.data import DataRules, read_data
from app.submission.replies import Refusal

NORMALISE = DataRules(max_size=10_000, normalize_bare_line_endings=True)
REJECT = DataRules(max_size=10_000, normalize_bare_line_endings=False)


async def read(data: bytes, rules: DataRules) -> tuple[bytes | Refusal, bytes]:
    """What read_data returns (or raises), and what is left unread after it."""
    reader = asyncio.StreamReader(limit=1001)  # aiosmtpd's line limit
    reader.feed_data(data)
    reader.feed_eof()
    try:
        result: bytes | Refusal = await read_data(reader, rules)
    except Refusal as refusal:
        result = refusal
    return result, await reader.read()


async def test_ends_at_crlf_dot_crlf_and_unstuffs_dots() -> None:
    result, rest = await read(b"a\r\n..b\r\n.c\r\n.\r\nQUIT\r\n", NORMALISE)
    assert result == b"a\r\n.b\r\nc\r\n"
    assert rest == b"QUIT\r\n"


async def test_an_empty_message() -> None:
    assert await read(b".\r\n", NORMALISE) == (b"", b"")


@pytest.mark.parametrize(
    ("data", "stored"),
    [
        (b"a\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),  # "." after a bare LF is a line, unstuffed
        (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\n.\r\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),  # not the end: a bare LF came before
        (b"a\r.\r\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),
        (b"x\ny\n..z\r\n.\r\n", b"x\r\ny\r\n.z\r\n"),  # a bare-LF client's dot-stuffing
    ],
)
async def test_bare_line_endings_are_normalised(data: bytes, stored: bytes) -> None:
    result, rest = await read(data, NORMALISE)
    assert (result, rest) == (stored, b"")


async def test_bare_line_endings_can_be_refused_after_reading_to_the_end() -> None:
    result, rest = await read(b"a\n.\nMAIL FROM:<x@y.test>\r\n.\r\nNOOP\r\n", REJECT)
    assert isinstance(result, Refusal)
    assert result.reply.startswith("554 5.6.0 Message refused: bare CR or LF")
    assert rest == b"NOOP\r\n"


async def test_size_limit_counts_the_unstuffed_message() -> None:
    rules = DataRules(max_size=10, normalize_bare_line_endings=True)
    fits, _ = await read(b"12345678\r\n.\r\n", rules)  # 10 bytes with CRLF
    assert fits == b"12345678\r\n"
    result, rest = await read(b"12345678\r\n9\r\n.\r\nQUIT\r\n", rules)
    assert isinstance(result, Refusal)
    assert result.reply.startswith("552 5.3.4")
    assert rest == b"QUIT\r\n"


async def test_lines_over_998_octets_are_refused() -> None:
    fits, _ = await read(b"x" * 998 + b"\r\n.\r\n", NORMALISE)
    assert fits == b"x" * 998 + b"\r\n"
    result, rest = await read(b"y" * 999 + b"\r\n.\r\nQUIT\r\n", NORMALISE)
    assert isinstance(result, Refusal)
    assert "longer than 998 octets" in result.text
    result, rest = await read(b"z" * 5000 + b"\r\n.\r\nQUIT\r\n", NORMALISE)
    assert isinstance(result, Refusal)
    assert rest == b"QUIT\r\n"


@pytest.mark.parametrize(
    "data", [b"Subject: a\x00b\r\n\r\nx\r\n", b"From: a@b.test\r\n\r\nx\x00\r\n"]
)
async def test_a_nul_anywhere_is_refused_after_reading_to_the_end(data: bytes) -> None:
    result, rest = await read(data + b".\r\nQUIT\r\n", NORMALISE)
    assert isinstance(result, Refusal)
    assert result.reply.startswith("554 5.6.0 Message refused: NUL character in the message")
    assert rest == b"QUIT\r\n"
