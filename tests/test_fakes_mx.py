"""The ScriptedMX test server, driven over loopback by aiosmtplib."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator

import aiosmtplib
import pytest
import pytest_asyncio
import trustme

from tests.fakes.mx import LOOPBACK_HOSTS, ScriptedMX, free_port, make_tls_context

SENDER = "bounces@sender.test"
MESSAGE = (
    b"From: App <app@sender.test>\r\n"
    b"To: <ok@rcpt.test>\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".a line starting with a dot must survive dot-stuffing\r\n"
    b"..and so must this one\r\n"
)


@pytest_asyncio.fixture(loop_scope="session")
async def mx() -> AsyncIterator[ScriptedMX]:
    """A running plain-text ScriptedMX on 127.0.0.1."""
    async with ScriptedMX() as server:
        yield server


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest_asyncio.fixture(loop_scope="session")
async def tls_mx(ca: trustme.CA) -> AsyncIterator[ScriptedMX]:
    """A running ScriptedMX offering STARTTLS with a certificate for 127.0.0.1."""
    async with ScriptedMX(tls_context=make_tls_context(ca, "127.0.0.1")) as server:
        yield server


def client_for(
    server: ScriptedMX,
    *,
    timeout: float = 2.0,
    start_tls: bool | None = False,
    tls_context: ssl.SSLContext | None = None,
) -> aiosmtplib.SMTP:
    """An SMTP client for the server, with a fixed EHLO name."""
    return aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        local_hostname="client.test",
        timeout=timeout,
        start_tls=start_tls,
        tls_context=tls_context,
    )


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    """A client TLS context that trusts the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def send(server: ScriptedMX, *recipients: str) -> dict[str, aiosmtplib.SMTPResponse]:
    """Send MESSAGE over a fresh connection; return the refused recipients."""
    async with client_for(server) as client:
        errors, _ = await client.sendmail(SENDER, list(recipients), MESSAGE)
    return errors


async def test_one_transaction_with_three_recipients(mx: ScriptedMX) -> None:
    """Three RCPTs in one transaction make one message, bytes intact."""
    recipients = ["a@rcpt.test", "b@rcpt.test", "c@other.test"]
    assert await send(mx, *recipients) == {}
    [message] = await mx.wait_for(1)
    assert message.mail_from == SENDER
    assert message.rcpt_tos == recipients
    assert message.data == MESSAGE
    assert (message.peer_host, message.tls, message.helo) == ("127.0.0.1", False, "client.test")
    assert (mx.sessions, mx.transactions) == (1, 1)


async def test_rcpt_450_for_one_recipient(mx: ScriptedMX) -> None:
    """A RCPT rule with to= refuses only that recipient, case-insensitively."""
    mx.reply_at("RCPT", 450, "4.2.1 Mailbox busy", to="Busy@Rcpt.test")
    errors = await send(mx, "busy@rcpt.test", "ok@rcpt.test")
    assert errors["busy@rcpt.test"].code == 450
    assert [message.rcpt_tos for message in mx.messages] == [["ok@rcpt.test"]]


async def test_550_at_mail(mx: ScriptedMX) -> None:
    """A MAIL rule refuses the sender."""
    mx.reply_at("MAIL", 550, "5.7.1 Sender blocked")
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await send(mx, "ok@rcpt.test")
    assert refused.value.code == 550
    assert mx.messages == []


async def test_drop_mid_data_then_recover(mx: ScriptedMX) -> None:
    """A DATA drop cuts the connection inside the message; times=1 then delivers."""
    mx.drop_at("DATA", times=1)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(mx, "ok@rcpt.test")
    assert (mx.messages, mx.transactions) == ([], 0)
    await send(mx, "ok@rcpt.test")
    assert len(mx.messages) == 1
    assert mx.sessions == 2


async def test_drop_mid_data_does_not_wait_for_the_final_dot(mx: ScriptedMX) -> None:
    """The DATA drop happens once the first message bytes arrive, before any final dot."""
    mx.drop_at("DATA")
    reader, writer = await asyncio.open_connection(mx.host, mx.port)
    try:
        await reader.readline()  # the banner
        for command in (b"HELO client.test", b"MAIL FROM:<a@s.test>", b"RCPT TO:<b@r.test>"):
            writer.write(command + b"\r\n")
            assert (await reader.readline()).startswith(b"250")
        writer.write(b"DATA\r\n")
        assert (await reader.readline()).startswith(b"354")
        writer.write(b"Subject: half a message\r\n")
        assert await read_until_closed(reader) == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert mx.messages == []


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Whatever the server still sends before closing; a reset counts as nothing."""
    try:
        return await asyncio.wait_for(reader.read(), 1.0)
    except ConnectionResetError:
        return b""


async def test_drop_at_connect(mx: ScriptedMX) -> None:
    """A CONNECT drop closes the connection before any banner."""
    mx.drop_at("CONNECT", times=1)
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await client_for(mx).connect()
    assert await send(mx, "ok@rcpt.test") == {}


async def test_drop_after_final_dot_records_nothing(mx: ScriptedMX) -> None:
    """An EOD drop leaves the client without a reply and the MX without the message."""
    mx.drop_at("EOD")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(mx, "ok@rcpt.test")
    assert mx.messages == []


async def test_stall_delays_the_reply(mx: ScriptedMX) -> None:
    """A stall holds the reply back, then the session goes on normally."""
    mx.stall_at("MAIL", 0.3)
    started = time.monotonic()
    await send(mx, "ok@rcpt.test")
    assert time.monotonic() - started >= 0.3
    assert len(mx.messages) == 1


async def test_stall_beyond_client_timeout(mx: ScriptedMX) -> None:
    """A stall longer than the client's patience times the client out."""
    mx.stall_at("RCPT", 1.0)
    async with client_for(mx, timeout=0.2) as client:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await client.sendmail(SENDER, ["ok@rcpt.test"], MESSAGE)
    assert mx.messages == []


async def test_starttls_with_trusted_ca(tls_mx: ScriptedMX, ca: trustme.CA) -> None:
    """A client trusting the CA upgrades with STARTTLS and the message is marked TLS."""
    async with client_for(tls_mx, start_tls=None, tls_context=trusting(ca)) as client:
        assert client.get_transport_info("sslcontext") is not None
        await client.sendmail(SENDER, ["ok@rcpt.test"], MESSAGE)
    [message] = tls_mx.messages
    assert message.tls
    assert message.data == MESSAGE


async def test_starttls_not_advertised(tls_mx: ScriptedMX, ca: trustme.CA) -> None:
    """With advertise_starttls off, an opportunistic client stays in plain text."""
    tls_mx.advertise_starttls = False
    async with client_for(tls_mx, start_tls=None, tls_context=trusting(ca)) as client:
        assert "starttls" not in client.esmtp_extensions
        await client.sendmail(SENDER, ["ok@rcpt.test"], MESSAGE)
    assert [message.tls for message in tls_mx.messages] == [False]


async def test_refused_starttls(tls_mx: ScriptedMX, ca: trustme.CA) -> None:
    """refuse_starttls() keeps offering STARTTLS but answers it with 454."""
    tls_mx.refuse_starttls()
    client = client_for(tls_mx, start_tls=True, tls_context=trusting(ca))
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await client.connect()
    assert refused.value.code == 454
    assert not client.is_connected


async def test_ehlo_refused_falls_back_to_helo(mx: ScriptedMX) -> None:
    """With EHLO refused the client says HELO and still delivers, without ESMTP options."""
    mx.ehlo_refused = True
    await send(mx, "ok@rcpt.test")
    [message] = mx.messages
    assert (message.helo, message.mail_options) == ("client.test", [])


async def test_size_declared_over_limit_refused_at_mail(mx: ScriptedMX) -> None:
    """SIZE is advertised and a larger declared SIZE is refused at MAIL with 552 5.3.4."""
    mx.size_limit = 64
    async with client_for(mx) as client:
        await client.ehlo()
        assert client.esmtp_extensions["size"] == "64"
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail(SENDER, ["ok@rcpt.test"], MESSAGE)
    assert (refused.value.code, refused.value.message[:5]) == (552, "5.3.4")


async def test_size_enforced_after_data_without_declaration(mx: ScriptedMX) -> None:
    """A message over the limit sent without SIZE= is refused after the final dot."""
    mx.size_limit = 64
    async with client_for(mx) as client:
        await client.ehlo()
        await client.mail(SENDER)
        await client.rcpt("ok@rcpt.test")
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.data(MESSAGE)
    assert (refused.value.code, refused.value.message[:5]) == (552, "5.3.4")
    assert (mx.messages, mx.transactions) == ([], 1)


async def test_size_option_recorded_under_limit(mx: ScriptedMX) -> None:
    """The SIZE= the client declares shows in mail_options."""
    mx.size_limit = 10_000
    await send(mx, "ok@rcpt.test")
    assert mx.messages[0].mail_options == [f"SIZE={len(MESSAGE)}"]


async def test_8bitmime_off(mx: ScriptedMX) -> None:
    """Without 8BITMIME advertised, BODY=8BITMIME is refused."""
    mx.advertise_8bitmime = False
    async with client_for(mx) as client:
        await client.ehlo()
        assert "8bitmime" not in client.esmtp_extensions
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail(SENDER, options=["BODY=8BITMIME"])
    assert refused.value.code == 555


async def test_8bitmime_and_smtputf8_options_recorded(mx: ScriptedMX) -> None:
    """BODY=8BITMIME and SMTPUTF8 pass through to the recorded message."""
    body = "Subject: caf\u00e9\r\n\r\nna\u00efve\r\n".encode()
    async with client_for(mx) as client:
        await client.sendmail(
            SENDER, ["j\u00f6rg@b\u00fccher.test"], body, mail_options=["BODY=8BITMIME", "SMTPUTF8"]
        )
    [message] = mx.messages
    assert message.mail_options == ["BODY=8BITMIME", "SMTPUTF8"]
    assert (message.rcpt_tos, message.data) == (["j\u00f6rg@b\u00fccher.test"], body)


async def test_smtputf8_off(mx: ScriptedMX) -> None:
    """Without SMTPUTF8 advertised the client sees it missing."""
    mx.advertise_smtputf8 = False
    async with client_for(mx) as client:
        await client.ehlo()
        assert "smtputf8" not in client.esmtp_extensions


async def test_two_mx_hosts_on_one_port() -> None:
    """Two instances on 127.0.0.2 and 127.0.0.3 share a port and each keeps its mail."""
    port = free_port()
    async with ScriptedMX("127.0.0.2", port) as first, ScriptedMX("127.0.0.3", port) as second:
        assert first.port == second.port == port
        await send(first, "one@rcpt.test")
        await send(second, "two@rcpt.test")
    assert [(m.peer_host, m.rcpt_tos) for m in first.messages] == [("127.0.0.2", ["one@rcpt.test"])]
    assert [(m.peer_host, m.rcpt_tos) for m in second.messages] == [
        ("127.0.0.3", ["two@rcpt.test"])
    ]


async def test_reply_once_then_normal(mx: ScriptedMX) -> None:
    """times=1 refuses the first attempt only: the retry is accepted."""
    mx.reply_at("RCPT", 450, "4.7.1 Greylisted, try again", times=1)
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(mx, "ok@rcpt.test")
    assert await send(mx, "ok@rcpt.test") == {}
    assert len(mx.messages) == 1


async def test_connection_reuse_is_counted(mx: ScriptedMX) -> None:
    """Two transactions on one connection: one session, two transactions."""
    async with client_for(mx) as client:
        await client.sendmail(SENDER, ["a@rcpt.test"], MESSAGE)
        await client.sendmail(SENDER, ["b@rcpt.test"], MESSAGE)
    assert (mx.sessions, mx.transactions, len(mx.messages)) == (1, 2, 2)


async def test_refusing_banner(mx: ScriptedMX) -> None:
    """A 421 banner refuses the connection."""
    mx.reply_at("CONNECT", 421, "4.3.2 Too busy")
    client = client_for(mx)
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
        await client.connect()
    assert refused.value.code == 421


async def test_custom_banner(mx: ScriptedMX) -> None:
    """A 220 CONNECT rule only changes the banner text."""
    mx.reply_at("CONNECT", 220, "mx.custom.test ESMTP ready")
    async with client_for(mx) as client:
        assert client.is_connected
        await client.sendmail(SENDER, ["ok@rcpt.test"], MESSAGE)
    assert len(mx.messages) == 1


async def test_data_command_refused(mx: ScriptedMX) -> None:
    """A DATA rule answers the DATA command instead of 354."""
    mx.reply_at("DATA", 554, "5.7.1 No thanks")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(mx, "ok@rcpt.test")
    assert refused.value.code == 554
    assert mx.messages == []


async def test_final_dot_refused(mx: ScriptedMX) -> None:
    """An EOD rule refuses the message after it was sent: not recorded, but counted."""
    mx.reply_at("EOD", 451, "4.3.0 Try later")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(mx, "ok@rcpt.test")
    assert refused.value.code == 451
    assert (mx.messages, mx.transactions) == ([], 1)


async def test_null_sender(mx: ScriptedMX) -> None:
    """MAIL FROM:<> is recorded as "<>"."""
    async with client_for(mx) as client:
        await client.sendmail("", ["ok@rcpt.test"], MESSAGE)
    assert mx.messages[0].mail_from == "<>"


async def test_wait_for_times_out(mx: ScriptedMX) -> None:
    """wait_for() gives up with TimeoutError."""
    with pytest.raises(TimeoutError, match="expected 1 messages, got 0"):
        await mx.wait_for(1, timeout=0.05)


async def test_reset(mx: ScriptedMX) -> None:
    """reset() forgets messages, rules and counters."""
    await send(mx, "ok@rcpt.test")
    mx.reply_at("MAIL", 550)
    mx.reset()
    assert (mx.messages, mx.sessions, mx.transactions) == ([], 0, 0)
    await send(mx, "ok@rcpt.test")
    assert len(mx.messages) == 1


async def test_stop_aborts_open_sessions() -> None:
    """stop() cuts clients still connected, so nothing leaks."""
    server = ScriptedMX()
    await server.start()
    client = client_for(server)
    await client.connect()
    await server.stop()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await client.noop()
    client.close()


def test_rule_validation() -> None:
    """Bad stages, to= outside RCPT and accepting DATA rules are refused."""
    server = ScriptedMX()
    with pytest.raises(ValueError, match="unknown stage"):
        server.reply_at("QUIT", 221)
    with pytest.raises(ValueError, match="only applies to RCPT"):
        server.reply_at("MAIL", 550, to="a@b.test")
    with pytest.raises(ValueError, match="must refuse"):
        server.reply_at("DATA", 354)


def test_free_port_is_free_on_every_loopback_host() -> None:
    """free_port() returns a port every loopback host can bind."""
    port = free_port()
    for host in LOOPBACK_HOSTS:
        with socket.socket() as sock:
            sock.bind((host, port))
