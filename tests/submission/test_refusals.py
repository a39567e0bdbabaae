"""Deterministic bad input over SMTP gets a permanent 5xx naming the problem and writes
nothing; a temporary 4xx would make the client retry the same message forever."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import Database
from app.messages.models import Message
from app.submission.models import SmtpSubmission
from tests.fakes.dns import FakeDNS
from tests.submission.clients import QUEUED, Listener
from tests.support import Sender, make_sender
from tests.test_end_to_end import message_view


def mime(sender: Sender, *headers: str, body: str = "Hello.\r\n") -> bytes:
    """A small message from the sender's domain; `headers` come after From."""
    lines = [f"From: Shop <{sender.address()}>", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def send(listener: Listener, sender: Sender, data: bytes) -> tuple[int, bytes]:
    """One message to one recipient; the reply to the end of data (blocking: use a thread)."""
    with listener.smtp(login=sender.key) as client:
        client.mail(sender.address())
        client.rcpt("a@example.test")
        return client.data(data)


async def messages_stored(db: Database) -> int:
    async with db.session() as session:
        return (await session.execute(select(func.count()).select_from(Message))).scalar_one()


async def stored_message(db: Database, message_id: str) -> Message:
    async with db.session() as session:
        found = await session.get(Message, message_id)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("smtpapi", "problem"),
    [
        ('{"send_at": 100000000000000000000000}', b"'send_at' may be at most 7d ahead"),
        ('{"asm_group_id": 1000000000000000000000000000}', b"'asm_group_id' must be an integer"),
        ('{"filters": ' + "[" * 5000 + "]" * 5000 + "}", b"nested more than 8 levels deep"),
        ('{"filters": ' + '{"a": ' * 20 + "{}" + "}" * 20 + "}", b"nested more than 8 levels"),
        ('{"unique_args": {"user": "\\ud800"}}', b"'unique_args.user' holds a lone UTF-16"),
        ('{"category": ["\\udfff"]}', b"'category.0' holds a lone UTF-16 surrogate"),
        ('{"unique_args": {"user": "a\\u0000b"}}', b"'unique_args.user' holds a NUL character"),
        ('{"unique_args": {"n": NaN}}', b"NaN is not a JSON number"),
    ],
)
async def test_smtpapi_no_column_can_store_is_refused_for_good(
    submission: Listener, sender: Sender, db: Database, smtpapi: str, problem: bytes
) -> None:
    # Folded (RFC 5322 §2.2.3), as a long header must be.
    folded = "\r\n ".join(smtpapi[i : i + 900] for i in range(0, len(smtpapi), 900))
    data = mime(sender, "X-SMTPAPI: " + folded)
    code, reply = await asyncio.to_thread(send, submission, sender, data)
    assert code == 554, reply
    assert reply.startswith(b"5.6.0 Message refused: X-SMTPAPI: ")
    assert problem in reply
    assert await messages_stored(db) == 0


async def test_a_nul_in_the_body_is_refused(
    submission: Listener, sender: Sender, db: Database
) -> None:
    code, reply = await asyncio.to_thread(
        send, submission, sender, mime(sender, body="before\x00after\r\n")
    )
    assert (code, reply[:6]) == (554, b"5.6.0 ")
    assert b"NUL character" in reply
    assert await messages_stored(db) == 0


async def test_mail_from_that_cannot_be_stored_is_refused(
    submission: Listener, sender: Sender
) -> None:
    def talk() -> list[tuple[int, bytes]]:
        with submission.smtp(login=sender.key) as client:
            answers = []
            for command in (b"MAIL FROM:<\xff@x.test> SMTPUTF8", b"MAIL FROM:<caf\xc3\xa9@x.test>"):
                client.send(command + b"\r\n")
                answers.append(client.getreply())
            return answers

    undecodable, needs_smtputf8 = await asyncio.to_thread(talk)
    assert undecodable == (553, b"5.1.7 Bad sender address syntax: not UTF-8")
    assert needs_smtputf8 == (553, b"5.6.7 Non-ASCII address requires SMTPUTF8")


async def test_encoded_words_that_decode_to_no_text_are_stored_cleaned(
    submission: Listener, sender: Sender, client: httpx.AsyncClient, db: Database
) -> None:
    # Not UTF-8, and NUL: once a 451 on PostgreSQL, which stores neither.
    data = (
        f"From: =?utf-8?B?gA==?= <{sender.address()}>\r\nSubject: =?utf-8?B?AA==?=hi\r\n"
        "To: =?x-unknown?B?gA==?= <a@example.test>\r\n\r\nHello.\r\n"
    ).encode()
    code, reply = await asyncio.to_thread(send, submission, sender, data)
    assert code == 250, reply
    found = QUEUED.search(f"{code} {reply.decode()}")
    assert found
    view = await message_view(client, sender, found.group(1))
    json.dumps(view).encode("utf-8")
    assert (view["from"]["name"], view["subject"]) == ("\ufffd", "hi")
    stored = await stored_message(db, found.group(1))
    assert stored.to_header == [{"email": "a@example.test", "name": "\ufffd"}]


@pytest.mark.parametrize(
    "from_field",
    ["<me@elsewhere.test>{own}", "{own} <me@elsewhere.test>", "Shop <{own}> trailing"],
)
async def test_an_ambiguous_from_is_refused(
    submission: Listener, sender: Sender, db: Database, from_field: str
) -> None:
    data = f"From: {from_field.format(own=sender.address())}\r\n\r\nhi\r\n".encode()
    code, reply = await asyncio.to_thread(send, submission, sender, data)
    assert code == 550, reply
    assert reply.startswith(b"5.1.7 Bad From header field: invalid address")
    assert await messages_stored(db) == 0


async def test_sender_must_name_a_sending_domain_of_the_account(
    submission: Listener, sender: Sender, db: Database, dns_server: FakeDNS, settings: Settings
) -> None:
    other = await make_sender(db, dns_server, settings, account="rival", domain="rival.test")
    refused = mime(sender, f"Sender: {other.address('ceo')}")
    code, reply = await asyncio.to_thread(send, submission, sender, refused)
    assert code == 550, reply
    assert reply == b"5.7.1 The Sender domain rival.test is not a sending domain of this account"
    assert await messages_stored(db) == 0

    accepted = mime(sender, f"Sender: Desk <{sender.address('desk')}>", "Reply-To: help@x.test")
    code, reply = await asyncio.to_thread(send, submission, sender, accepted)
    assert code == 250, reply
    found = QUEUED.search(f"{code} {reply.decode()}")
    assert found
    stored = await stored_message(db, found.group(1))
    assert stored.reply_to == [{"email": "help@x.test", "name": None}]


async def test_an_ehlo_name_that_cannot_be_stored_is_stored_cleaned(
    submission: Listener, sender: Sender, db: Database
) -> None:
    # RFC 5321 §4.1.4: a bad EHLO name is no reason to refuse mail; it once made every
    # message of the session 451.
    def talk() -> tuple[int, bytes]:
        with submission.smtp() as client:
            client.send(b"EHLO caf\xff\x00x\r\n")
            assert client.getreply()[0] == 250
            client.user, client.password = "apikey", sender.key
            client.auth("PLAIN", client.auth_plain)
            client.mail(sender.address())
            client.rcpt("a@example.test")
            return client.data(mime(sender))

    code, reply = await asyncio.to_thread(talk)
    assert code == 250, reply
    async with db.session() as session:
        helo = (await session.execute(select(SmtpSubmission.helo))).scalar_one()
    assert helo == "caf??x"
