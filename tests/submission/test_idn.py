"""Internationalised domains over SMTP submission: an A-label the client wrote leaves as one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest_asyncio

from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.submission.clients import Listener
from tests.support import Sender

Deliver = Callable[[], Awaitable[int]]
StartMX = Callable[..., Awaitable[ScriptedMX]]


@pytest_asyncio.fixture
async def idn_mx(start_mx: StartMX, dns_server: FakeDNS) -> ScriptedMX:
    """The MX host of bücher.example, which does not offer SMTPUTF8."""
    dns_server.add_mx("xn--bcher-kva.example", (10, "mx.xn--bcher-kva.example"))
    dns_server.add_a("mx.xn--bcher-kva.example", "127.0.0.6")
    mx = await start_mx("127.0.0.6")
    mx.advertise_smtputf8 = False
    return mx


async def test_an_a_label_submitted_over_smtp_needs_no_smtputf8(
    submission: Listener,
    sender: Sender,
    idn_mx: ScriptedMX,
    deliver: Deliver,
) -> None:
    # The address is stored as email-validator normalises it (bücher.example); it must still
    # leave as the A-label the client wrote, without SMTPUTF8.
    def talk() -> tuple[int, bytes]:
        with submission.smtp(login=sender.key) as smtp:
            smtp.mail(sender.address())
            smtp.rcpt("user@xn--bcher-kva.example")
            return smtp.data(f"From: {sender.address()}\r\nSubject: hi\r\n\r\nHi.\r\n".encode())

    code, reply = await asyncio.to_thread(talk)
    assert code == 250, reply
    await deliver()
    [received] = await idn_mx.wait_for(1)
    assert received.rcpt_tos == ["user@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in received.mail_options
