"""The submission listener driven by Python's smtplib: envelopes, limits, the accept rules of
POST /v1/send, and the changes a submission server may make to a message (RFC 6409 §8)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import smtplib
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from app.accounts import service as accounts
from app.accounts.models import ApiKey
from app.core import clock
from app.core.db import Database
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.submission.clients import QUEUED, Listener
from tests.support import Sender, make_key, verify_dkim
from tests.test_end_to_end import message_view, status_of

Deliver = Callable[[], Awaitable[int]]
StartSubmission = Callable[..., Awaitable[Listener]]


def mime(sender: Sender, *headers: str, body: str = "Hello.\r\n") -> bytes:
    """A small message from the sender's domain; `headers` come after From."""
    lines = [f"From: Shop <{sender.address()}>", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def submit(listener: Listener, sender: Sender, rcpts: list[str], data: bytes) -> str:
    """Log in, send one message, return the id from the 250 reply (blocking: use a thread)."""
    with listener.smtp(login=sender.key) as client:
        client.mail(sender.address())
        for rcpt in rcpts:
            code, reply = client.rcpt(rcpt)
            assert code == 250, reply
        code, reply = client.data(data)
        assert code == 250, reply
    found = QUEUED.search(f"{code} {reply.decode()}")
    assert found, reply
    return found.group(1)


async def test_every_envelope_recipient_gets_the_message_and_bcc_is_removed(
    submission: Listener,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
    dns_server: FakeDNS,
) -> None:
    data = mime(
        sender, "To: Ann <ann@example.test>", "Cc: cid@example.test",
        "Bcc: bea@example.test", "Subject: Team lunch",
    )  # fmt: skip
    rcpts = ["ann@example.test", "cid@example.test", "bea@example.test"]
    message_id = await asyncio.to_thread(submit, submission, sender, rcpts, data)
    await deliver()
    [received] = await mx.wait_for(1)  # identical bytes to one domain: one transaction
    assert sorted(received.rcpt_tos) == sorted(rcpts)
    assert b"\r\nBcc:" not in received.data  # RFC 5322 §3.6.3
    assert await verify_dkim(received.data, dns_server)
    view = await message_view(client, sender, message_id)
    assert {r["email"]: r["kind"] for r in view["recipients"]} == {
        "ann@example.test": "to",
        "cid@example.test": "cc",
        "bea@example.test": "bcc",
    }
    assert view["from"] == {"email": sender.address(), "name": "Shop"}


async def test_auth_before_starttls_is_refused(submission: Listener, sender: Sender) -> None:
    def talk() -> tuple[bool, int, int]:
        with smtplib.SMTP("127.0.0.1", submission.port, timeout=10) as plain:
            plain.ehlo()
            offered = plain.has_extn("auth")
            auth_code, _ = plain.docmd("AUTH", "PLAIN AGFwaWtleQBzZWNyZXQ=")
            mail_code, _ = plain.mail(sender.address())
        return offered, auth_code, mail_code

    offered, auth_code, mail_code = await asyncio.to_thread(talk)
    assert not offered
    assert auth_code == 538  # RFC 4954 §6: encryption required
    assert mail_code == 530


async def test_implicit_tls_port_requires_auth_too(submission: Listener, sender: Sender) -> None:
    def talk() -> tuple[bool, int]:
        context = submission.client_context()
        with smtplib.SMTP_SSL("127.0.0.1", submission.tls_port, context=context) as client:
            client.ehlo()
            return client.has_extn("auth"), client.mail(sender.address())[0]

    offered, mail_code = await asyncio.to_thread(talk)
    assert offered
    assert mail_code == 530


async def test_one_session_carries_several_messages(
    submission: Listener, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    def talk() -> list[str]:
        ids = []
        with submission.smtp(login=sender.key) as client:
            for number in range(3):
                client.sendmail(
                    sender.address(), ["x@example.test"], mime(sender, f"Subject: {number}")
                )
                ids.append(client.noop()[1].decode())
            client.rset()
        return ids

    await asyncio.to_thread(talk)
    await deliver()
    received = await mx.wait_for(3)
    assert len({m.data for m in received}) == 3


async def test_size_is_advertised_and_enforced(
    start_submission: StartSubmission, sender: Sender
) -> None:
    listener = await start_submission(max_message_size=4096)

    def talk() -> tuple[str, tuple[int, bytes], tuple[int, bytes], int]:
        with listener.smtp(login=sender.key) as client:
            advertised = client.esmtp_features["size"]
            declared = client.mail(sender.address(), ["SIZE=5000"])
            client.rset()
            client.mail(sender.address())
            client.rcpt("big@example.test")
            too_big = client.data(mime(sender, body="x" * 70 + "\r\n") * 60)
            small = client.sendmail(sender.address(), ["ok@example.test"], mime(sender))
        return advertised, declared, too_big, len(small)

    advertised, declared, too_big, refused = await asyncio.to_thread(talk)
    assert advertised == "4096"
    assert declared[0] == 552
    assert declared[1].startswith(b"5.3.4")
    assert too_big[0] == 552
    assert refused == 0  # the session goes on after a refused message


async def test_recipients_past_the_limit_get_452(
    start_submission: StartSubmission, sender: Sender
) -> None:
    listener = await start_submission(submission_max_recipients=2)

    def talk() -> dict[str, tuple[int, bytes]]:
        with listener.smtp(login=sender.key) as client:
            rcpts = ["a@example.test", "b@example.test", "c@example.test"]
            return client.sendmail(sender.address(), rcpts, mime(sender))

    refused = await asyncio.to_thread(talk)
    assert refused == {"c@example.test": (452, b"4.5.3 Too many recipients")}


async def test_bad_recipient_addresses_are_refused(submission: Listener, sender: Sender) -> None:
    def talk() -> list[int]:
        with submission.smtp(login=sender.key) as client:
            client.mail(sender.address())
            return [client.rcpt(a)[0] for a in ("no-at-sign", "a@b@c.test", "ok@example.test")]

    assert await asyncio.to_thread(talk) == [553, 553, 250]


async def test_from_domain_must_belong_to_the_account(
    submission: Listener, sender: Sender, db: Database
) -> None:
    data = b"From: someone@elsewhere.test\r\nSubject: spoof\r\n\r\nhi\r\n"

    def talk() -> tuple[int, bytes]:
        with submission.smtp(login=sender.key) as client:
            client.mail(sender.address())
            client.rcpt("a@example.test")
            return client.data(data)

    code, reply = await asyncio.to_thread(talk)
    assert code == 550
    assert reply.startswith(b"5.7.1 The from domain elsewhere.test is not a sending domain")


async def test_suppressed_recipients_are_dropped(
    submission: Listener,
    sender: Sender,
    db: Database,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
) -> None:
    async with db.session() as session:
        await suppressions.suppress(
            session, account_id=sender.account_id, email="gone@example.test",
            type=SuppressionType.UNSUBSCRIBE, reason="asked",
        )  # fmt: skip
        await session.commit()
    rcpts = ["gone@example.test", "here@example.test"]
    message_id = await asyncio.to_thread(submit, submission, sender, rcpts, mime(sender))
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.rcpt_tos == ["here@example.test"]
    view = await message_view(client, sender, message_id)
    assert status_of(view, "gone@example.test") == "dropped"


async def test_a_key_revoked_during_the_session_stops_sending(
    submission: Listener, sender: Sender, db: Database
) -> None:
    def talk(revoked: asyncio.Event, loop: asyncio.AbstractEventLoop) -> tuple[int, bytes]:
        with submission.smtp(login=sender.key) as client:
            asyncio.run_coroutine_threadsafe(_revoke(db, sender), loop).result(timeout=10)
            client.mail(sender.address())
            client.rcpt("a@example.test")
            return client.data(mime(sender))

    code, reply = await asyncio.to_thread(talk, asyncio.Event(), asyncio.get_running_loop())
    assert code == 550
    assert reply.startswith(b"5.7.8")


async def test_an_unannounced_revocation_stops_auth_within_the_cache_ttl(
    submission: Listener, sender: Sender, db: Database
) -> None:
    def log_in() -> None:
        submission.smtp(login=sender.key).quit()

    await asyncio.to_thread(log_in)  # the key is now in the listener's cache
    async with db.session() as session:  # revoked behind every cache's back: no announcement
        await session.execute(
            update(ApiKey)
            .where(ApiKey.prefix == sender.key.split(".")[1])
            .values(revoked_at=clock.now())
        )
        await session.commit()
    ttl = submission.server.settings.auth_cache_ttl.total_seconds()
    await asyncio.sleep(ttl + 0.1)
    with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
        await asyncio.to_thread(log_in)
    assert failed.value.smtp_code == 535


async def _revoke(db: Database, sender: Sender) -> None:
    async with db.session() as session:
        assert await accounts.revoke_key(session, prefix=sender.key.split(".")[1])
        await session.commit()


async def test_a_key_without_mail_send_cannot_log_in(
    submission: Listener, sender: Sender, db: Database
) -> None:
    reader = await make_key(db, account=sender.account_name, scopes=["messages.read"])

    def talk() -> smtplib.SMTPAuthenticationError:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            submission.smtp(login=reader)
        return failed.value

    error = await asyncio.to_thread(talk)
    assert error.smtp_code == 535
    assert b"mail.send" in error.smtp_error


@pytest.mark.parametrize(("hops", "code"), [(99, 250), (100, 554)])
async def test_mail_loops_are_refused(
    submission: Listener, sender: Sender, hops: int, code: int
) -> None:
    received = [f"Received: from hop{n}.test by relay{n}.test; Mon, 1 Jan 2024 00:00:00 +0000"
                for n in range(hops)]  # fmt: skip
    data = mime(sender, *received, "Subject: loop")

    def talk() -> tuple[int, bytes]:
        with submission.smtp(login=sender.key) as client:
            client.mail(sender.address())
            client.rcpt("a@example.test")
            return client.data(data)

    got, reply = await asyncio.to_thread(talk)
    assert got == code, reply
    if code == 554:
        assert reply.startswith(b"5.4.6")


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("{not json", b"not valid JSON"),
        ('{"to": ["x@example.test"], "sub": {"-name-": ["X"]}}', b"personalisation"),
        ('{"categories": ["a"]}', b"unknown key 'categories'"),
        ('{"send_at": "tomorrow"}', b"Unix timestamp"),
        ('{"filters": {"clicktrack": {"settings": {"enable": 1}}}}', b"clicktrack"),
    ],
)
async def test_smtpapi_that_cannot_be_honoured_is_refused(
    submission: Listener, sender: Sender, header: str, problem: bytes
) -> None:
    def talk() -> tuple[int, bytes]:
        with submission.smtp(login=sender.key) as client:
            client.mail(sender.address())
            client.rcpt("a@example.test")
            return client.data(mime(sender, f"X-SMTPAPI: {header}"))

    code, reply = await asyncio.to_thread(talk)
    assert code == 554
    assert reply.startswith(b"5.6.0 Message refused: X-SMTPAPI:")
    assert problem in reply


async def test_smtpapi_send_at_holds_delivery_until_then(
    submission: Listener,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
    travel: Callable[[timedelta], None],
) -> None:
    send_at = int(clock.now().timestamp()) + 3600
    created = await client.post(
        "/v3/asm/groups", json={"name": "News", "description": ""}, headers=sender.headers
    )
    group_id = created.json()["id"]
    smtpapi = json.dumps(
        {
            "send_at": send_at,
            "asm_group_id": group_id,
            "filters": {"clicktrack": {"settings": {"enable": 0}}},
        }
    )
    data = mime(sender, f"X-SMTPAPI: {smtpapi}")
    message_id = await asyncio.to_thread(submit, submission, sender, ["a@example.test"], data)
    view = await message_view(client, sender, message_id)
    [recipient] = view["recipients"]
    assert recipient["status"] == "scheduled"
    [processed] = recipient["events"]
    assert processed["data"]["asm_group_id"] == group_id  # events carry it, as for the send APIs
    assert recipient["next_attempt_at"].startswith(
        clock.now().fromtimestamp(send_at, clock.now().tzinfo).isoformat()[:19]
    )
    await deliver()
    assert mx.messages == []
    travel(timedelta(hours=1, seconds=1))
    await deliver()
    [received] = await mx.wait_for(1)
    assert b"X-SMTPAPI" not in received.data


async def test_message_id_and_date_are_added_only_when_missing(
    submission: Listener, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    own = mime(sender, "Message-ID: <mine@client.test>", "Date: Mon, 1 Jan 2024 10:00:00 +0000")
    bare = mime(sender, "Subject: bare")
    first = await asyncio.to_thread(submit, submission, sender, ["a@example.test"], own)
    second = await asyncio.to_thread(submit, submission, sender, ["b@example.test"], bare)
    await deliver()
    received = {m.rcpt_tos[0]: m.data for m in await mx.wait_for(2)}
    kept = email.message_from_bytes(received["a@example.test"], policy=email.policy.default)
    added = email.message_from_bytes(received["b@example.test"], policy=email.policy.default)
    assert kept["Message-ID"] == "<mine@client.test>"
    assert b"\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n" in received["a@example.test"]
    assert kept.get_all("Message-ID") == ["<mine@client.test>"]  # none added beside it
    assert f"<{first.lower()}@" not in received["a@example.test"].decode()
    assert added["Message-ID"] == f"<{second.lower()}@mta.columba.test>"
    assert len(added.get_all("Date") or []) == 1


async def test_8bit_body_is_made_7bit_before_signing(
    submission: Listener, sender: Sender, mx: ScriptedMX, deliver: Deliver, dns_server: FakeDNS
) -> None:
    data = mime(
        sender,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "Subject: Grüße",
        body="",
    ).replace(b"Subject: Gr\xc3\xbc\xc3\x9fe", b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=")
    data += "Grüße aus Köln.\r\n".encode()

    def talk() -> tuple[int, bytes]:
        with submission.smtp(login=sender.key) as client:
            client.mail(sender.address(), ["BODY=8BITMIME"])
            client.rcpt("a@example.test")
            return client.data(data)

    code, reply = await asyncio.to_thread(talk)
    assert code == 250, reply
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.data.isascii()  # CHECKLIST 10: no 8-bit byte reaches any server
    assert await verify_dkim(received.data, dns_server)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content().strip() == "Grüße aus Köln."


async def test_utf8_headers_travel_with_smtputf8(
    submission: Listener,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
) -> None:
    data = mime(sender, "Subject: Grüße", "Content-Type: text/plain; charset=utf-8",
                body="Grüße.\r\n").replace(b"Shop <", "Shöp <".encode())  # fmt: skip

    def talk() -> tuple[int, bytes]:
        with submission.smtp(login=sender.key) as client:
            client.mail(sender.address(), ["SMTPUTF8", "BODY=8BITMIME"])
            client.rcpt("a@example.test")
            return client.data(data)

    code, reply = await asyncio.to_thread(talk)
    assert code == 250, reply
    message_id = QUEUED.search(f"{code} {reply.decode()}")
    assert message_id
    await deliver()
    [received] = await mx.wait_for(1)
    assert "SMTPUTF8" in received.mail_options  # RFC 6532 headers need it
    assert "Subject: Grüße".encode() in received.data
    view = await message_view(client, sender, message_id.group(1))
    assert view["subject"] == "Grüße"
    assert view["from"]["name"] == "Shöp"
