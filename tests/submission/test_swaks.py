"""The submission listener driven by swaks: delivery end to end, TLS before AUTH, bad keys,
the client-IP lockout, the per-key rate and implicit TLS on the second port."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx

from app.accounts import service as accounts
from app.core import clock
from app.core.db import Database
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.submission.clients import Listener, swaks
from tests.support import Sender, verify_dkim
from tests.test_end_to_end import message_view

Deliver = Callable[[], Awaitable[int]]


async def test_swaks_message_is_signed_delivered_and_visible(
    submission: Listener,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    dns_server: FakeDNS,
    client: httpx.AsyncClient,
) -> None:
    run = await swaks(
        submission,
        "--from", sender.address(), "--to", "alice@example.test",
        "--header", "Subject: Invoice 42",
        "--header", 'X-SMTPAPI: {"category": ["invoice"], "unique_args": {"order": "42"}}',
        key=sender.key,
    )  # fmt: skip
    assert run.returncode == 0, run.output
    assert "STARTTLS" in run.output
    message_id = run.message_id

    await deliver()

    [received] = await mx.wait_for(1)
    assert received.rcpt_tos == ["alice@example.test"]
    assert received.mail_from.endswith("@bounces.sender.test")  # VERP, as for the send APIs
    assert await verify_dkim(received.data, dns_server)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Invoice 42"
    assert parsed["X-SMTPAPI"] is None  # SendGrid removes it too
    assert parsed["X-Mailer"].startswith("swaks")  # the client's headers are kept
    assert f"with ESMTPSA id {message_id}" in " ".join(parsed["Received"].split())
    view = await message_view(client, sender, message_id)
    assert view["subject"] == "Invoice 42"
    assert view["categories"] == ["invoice"]
    assert view["metadata"] == {"order": "42"}
    assert view["message_id"] == parsed["Message-ID"]  # swaks's own Message-Id is kept
    [recipient] = view["recipients"]
    assert recipient["status"] == "delivered"
    assert [event["type"] for event in recipient["events"]] == ["processed", "delivered"]


async def test_tls_on_connect_port_works(
    submission: Listener, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    run = await swaks(
        submission, "--from", sender.address(), "--to", "bob@example.test",
        "--auth", "LOGIN", key=sender.key, implicit=True,
    )  # fmt: skip
    assert run.returncode == 0, run.output
    assert "STARTTLS" not in run.output  # TLS from the first byte (RFC 8314)
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.rcpt_tos == ["bob@example.test"]


async def test_without_tls_auth_is_not_offered(submission: Listener, sender: Sender) -> None:
    run = await swaks(
        submission, "--from", sender.address(), "--to", "alice@example.test",
        key=sender.key, tls=False,
    )  # fmt: skip
    assert run.returncode == 28, run.output  # swaks: authentication failed
    assert "Host did not advertise authentication" in run.output
    ehlo_reply = [line for line in run.output.splitlines() if line.startswith("<-  250")]
    assert "<-  250-STARTTLS" in ehlo_reply
    assert not [line for line in ehlo_reply if "AUTH" in line]


async def test_no_relay_without_auth(submission: Listener, sender: Sender) -> None:
    run = await swaks(submission, "--from", sender.address(), "--to", "alice@example.test")
    assert run.returncode == 23, run.output  # swaks: error after MAIL
    assert "530 5.7.0 Authentication required" in run.output


async def test_wrong_key_gets_535(submission: Listener, sender: Sender) -> None:
    wrong = sender.key[:-4] + "AAAA"
    run = await swaks(submission, "--from", sender.address(), "--to", "a@example.test", key=wrong)
    assert run.returncode == 28, run.output
    assert "535 5.7.8 Authentication credentials invalid" in run.output


async def test_repeated_failures_lock_the_client_ip_out(
    start_submission: Callable[..., Awaitable[Listener]],
    sender: Sender,
    travel: Callable[[timedelta], None],
) -> None:
    listener = await start_submission(
        submission_auth_max_failures=3, submission_auth_lockout=timedelta(minutes=10)
    )
    wrong = sender.key[:-4] + "AAAA"
    args = ("--from", sender.address(), "--to", "a@example.test", "--quit-after", "AUTH")
    for _ in range(2):
        run = await swaks(listener, *args, key=wrong)
        assert "535 5.7.8" in run.output
    third = await swaks(listener, *args, key=wrong)
    assert "421 4.7.0 Too many failed authentication attempts from 127.0.0.1" in third.output

    # Locked out: even the right key is refused, at the greeting (RFC 5321 §3.1).
    locked = await swaks(listener, *args, key=sender.key)
    assert locked.returncode == 21, locked.output  # swaks: error reading the banner
    assert "421 4.7.0" in locked.output

    travel(timedelta(minutes=11))
    again = await swaks(listener, *args, key=sender.key)
    assert "235 2.7.0 Authentication successful" in again.output


async def test_message_rate_per_key(
    submission: Listener,
    sender: Sender,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    async with db.session() as session:
        prefix = sender.key.split(".")[1]
        assert await accounts.set_smtp_rate_limit(session, prefix=prefix, per_minute=2)
        await session.commit()
    args = ("--from", sender.address(), "--to", "a@example.test")
    # Start at the beginning of a minute's window: the three sessions must share one window,
    # and on a loaded machine they can take many seconds.
    travel(timedelta(seconds=60 - clock.now().timestamp() % 60 + 0.5))
    for _ in range(2):
        run = await swaks(submission, *args, key=sender.key)
        assert run.returncode == 0, run.output
    limited = await swaks(submission, *args, key=sender.key)
    assert limited.returncode == 23, limited.output
    assert "451 4.7.1 Rate limit exceeded: this API key may send 2 messages per minute" in (
        limited.output
    )
    travel(timedelta(seconds=61))  # the next minute
    later = await swaks(submission, *args, key=sender.key)
    assert later.returncode == 0, later.output
