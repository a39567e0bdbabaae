"""SMTP smuggling (CVE-2023-51764 and relatives): only <CRLF>.<CRLF> ends DATA, and whatever
a client sends, the stored and relayed message holds CRLF line endings only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, select

from app.core.db import Database
from app.messages.models import Message
from tests.fakes.mx import ScriptedMX
from tests.submission.clients import Listener
from tests.support import Sender

Deliver = Callable[[], Awaitable[int]]
# A line ending that is not CRLF: a CR not followed by LF, or an LF not preceded by CR.
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
# What a smuggler hopes a lenient server reads as a second transaction after an early "end".
SMUGGLED = (
    b"MAIL FROM:<ceo@sender.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
    b"From: ceo@sender.test\r\nSubject: smuggled\r\n\r\nPay the invoice.\r\n"
)
# Almost-end-of-data sequences that some servers accept (SEC Consult, December 2023).
SEQUENCES = [b"\n.\n", b"\n.\r\n", b"\r\n.\r", b"\r.\r\n"]


def send_raw(listener: Listener, sender: Sender, payload: bytes) -> list[tuple[int, bytes]]:
    """Send `payload` verbatim after DATA, then NOOP: every reply, in order."""
    with listener.smtp(login=sender.key) as client:
        client.mail(sender.address())
        client.rcpt("alice@example.test")
        replies = [client.docmd("DATA")]
        client.send(payload)
        replies.append(client.getreply())
        replies.append(client.noop())  # the session is still in step: one reply per command
    return replies


def message(sender: Sender, sequence: bytes) -> bytes:
    """A message whose body holds `sequence` followed by a smuggled transaction."""
    head = f"From: {sender.address()}\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\n"
    return head.encode() + b"Legit body." + sequence + SMUGGLED + b".\r\n"


@pytest.mark.parametrize("sequence", SEQUENCES, ids=repr)
async def test_smuggled_transaction_stays_inside_one_normalised_message(
    submission: Listener, sender: Sender, mx: ScriptedMX, deliver: Deliver, sequence: bytes
) -> None:
    replies = await asyncio.to_thread(send_raw, submission, sender, message(sender, sequence))
    assert [code for code, _ in replies] == [354, 250, 250]
    await deliver()
    [received] = await mx.wait_for(1)
    await asyncio.sleep(0.2)
    assert len(mx.messages) == 1
    assert received.rcpt_tos == ["alice@example.test"]  # no mail for the victim
    assert BARE.search(received.data) is None  # CHECKLIST 30: CRLF only on the wire
    assert b"\r\nMAIL FROM:<ceo@sender.test>\r\n" in received.data  # body text, nothing more


@pytest.mark.parametrize("sequence", SEQUENCES, ids=repr)
async def test_bare_line_endings_can_be_refused(
    start_submission: Callable[..., Awaitable[Listener]],
    sender: Sender,
    db: Database,
    sequence: bytes,
) -> None:
    listener = await start_submission(submission_bare_line_endings="reject")
    replies = await asyncio.to_thread(send_raw, listener, sender, message(sender, sequence))
    assert [code for code, _ in replies] == [354, 554, 250]
    assert replies[1][1].startswith(b"5.6.0 Message refused: bare CR or LF")
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_dot_stuffed_lines_arrive_unchanged(
    submission: Listener, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    body = b".leading dot\r\n..two dots\r\n.\r\n"  # smtplib stuffs each of these lines

    def send() -> None:
        with submission.smtp(login=sender.key) as client:
            head = f"From: {sender.address()}\r\nSubject: dots\r\n\r\n".encode()
            client.sendmail(sender.address(), ["alice@example.test"], head + body)

    await asyncio.to_thread(send)
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.data.endswith(b"\r\n\r\n" + body)
