"""Reading DATA (RFC 5321 §4.1.1.4, §4.5.2) so that SMTP smuggling is impossible.

The message ends only at <CRLF>.<CRLF>. Inside it, a bare LF or CR is either refused or
normalised to CRLF (COLUMBA_SUBMISSION_BARE_LINE_ENDINGS, as Postfix's smtpd_forbid_bare_newline).
Either way the stored message holds CRLF line endings only and the worker dot-stuffs every line,
so no sequence a client sends (`\\n.\\n`, `\\r\\n.\\r`, …) can end our DATA early or another
server's DATA when we relay it (CVE-2023-51764, CVE-2023-51765, CVE-2023-51766).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.submission.replies import Refusal, refused_content

# RFC 5322 §2.1.1: at most 998 octets of text per line, CRLF excluded.
MAX_LINE = 998


@dataclass(frozen=True, slots=True)
class DataRules:
    """What a message may be."""

    max_size: int
    normalize_bare_line_endings: bool


@dataclass
class _Reading:
    """What has been read so far; after a problem, the rest is only drained."""

    lines: list[bytes]
    size: int = 0
    problem: Refusal | None = None

    def refuse(self, refusal: Refusal) -> None:
        """Remember the first problem and drop what was kept (it will not be used)."""
        if self.problem is None:
            self.problem = refusal
        self.lines.clear()


def too_big(max_size: int) -> Refusal:
    """552 5.3.4 (RFC 1870 §6.2, RFC 3463 X.3.4)."""
    return Refusal(
        552, "5.3.4", f"Message size exceeds fixed maximum message size ({max_size} bytes)"
    )


async def read_data(reader: asyncio.StreamReader, rules: DataRules) -> bytes:
    """Read up to the end-of-data line; the message with CRLF endings, dots unstuffed.

    A refused message is still read to its end, so the session stays in step with the client.
    """
    reading = _Reading(lines=[])
    after_crlf = True  # DATA's own CRLF starts the first line
    while True:
        try:
            chunk = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            reading.refuse(_line_too_long())
            after_crlf = await _skip_long_line(reader, exc.consumed)
            continue
        if after_crlf and chunk == b".\r\n":
            break
        after_crlf = chunk.endswith(b"\r\n")
        if reading.problem is None:
            _take_line(reading, chunk, rules)
    if reading.problem is not None:
        raise reading.problem
    return b"".join(line + b"\r\n" for line in reading.lines)


async def _skip_long_line(reader: asyncio.StreamReader, consumed: int) -> bool:
    """Read past a line longer than the reader's limit; True when it ended with CRLF."""
    skipped = await reader.read(consumed)
    while True:
        try:
            tail = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            skipped = await reader.read(exc.consumed)
            continue
        return tail.endswith(b"\r\n") or (tail == b"\n" and skipped.endswith(b"\r"))


def _take_line(reading: _Reading, chunk: bytes, rules: DataRules) -> None:
    """Keep one received line (ending in LF): split at bare line endings, unstuff dots."""
    ends_crlf = chunk.endswith(b"\r\n")
    text = chunk[:-2] if ends_crlf else chunk[:-1]
    if ends_crlf and b"\r" not in text:
        parts = [text]
    elif rules.normalize_bare_line_endings:
        parts = text.split(b"\r")  # a bare LF ended the chunk; a bare CR splits it
    else:
        reading.refuse(
            refused_content(
                "bare CR or LF in the message; every line must end with CRLF (RFC 5321 §2.3.8)"
            )
        )
        return
    for part in parts:
        # RFC 5321 §4.5.2: a leading dot was added by the client's dot-stuffing.
        line = part[1:] if part.startswith(b".") else part
        if len(line) > MAX_LINE:
            reading.refuse(_line_too_long())
            return
        if b"\x00" in line:
            reading.refuse(_nul())
            return
        reading.size += len(line) + 2
        reading.lines.append(line)
    if reading.size > rules.max_size:
        reading.refuse(too_big(rules.max_size))


def _nul() -> Refusal:
    """554 5.6.0 for a NUL, which no part of a message may hold."""
    # RFC 5322 §3.5 (text excludes %d0) and RFC 6152 §2 (8-bit lines hold no NUL): only
    # BINARYMIME (RFC 3030) could carry one, and neither we nor most servers offer it.
    return refused_content(
        "NUL character in the message (RFC 5322 §3.5); encode binary data as base64"
    )


def _line_too_long() -> Refusal:
    return refused_content(
        f"a line is longer than {MAX_LINE} octets (RFC 5322 §2.1.1); use quoted-printable or base64"
    )
