"""List-Unsubscribe's mailto: (RFC 2369 §3.2): mail to `unsubscribe+…@<bounce domain>`,
sent through the real `columba inbound` listener, unsubscribes the recipient it names."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib
import httpx
import pytest
from sqlalchemy import select

from app.asm.models import GroupSuppression
from app.core.config import Settings
from app.core.db import Database
from app.tracking.tokens import mailto_address
from tests.bounces.conftest import INBOUND_HOST
from tests.bounces.test_inbound import suppressions_of
from tests.bounces.test_intake_smtp import inbound_list
from tests.fakes.mx import ScriptedMX
from tests.support import Sender
from tests.test_end_to_end import send
from tests.tracking.conftest import Delivered, feed, make_group

DeliverTo = Callable[..., Awaitable[list[Delivered]]]


def request_from(person: str, to: str, subject: str = "Unsubscribe me") -> bytes:
    """The mail a client sends for a mailto: List-Unsubscribe."""
    return (
        f"From: <{person}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        "Message-ID: <req.1@mail.example.test>\r\n\r\nPlease stop.\r\n"
    ).encode()


async def submit(port: int, envelope_sender: str, rcpt: str, data: bytes) -> Any:
    """One message to the inbound listener."""
    async with aiosmtplib.SMTP(hostname=INBOUND_HOST, port=port, start_tls=False) as smtp:
        return await smtp.sendmail(envelope_sender, [rcpt], data)


def address_of(settings: Settings, sender: Sender, recipient: Delivered) -> str:
    """The recipient's unsubscribe address on the sender's bounce domain."""
    return mailto_address(
        recipient.recipient_id, sender.domain.bounce_domain, secret_key=settings.secret_key_bytes()
    )


async def test_mail_to_the_unsubscribe_address_unsubscribes(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    settings: Settings,
    inbound: int,
) -> None:
    [alice] = await deliver_to("alice@example.test")
    address = address_of(settings, sender, alice)
    # Any subject: the address says what is asked; some MTAs change a local part's case.
    for rcpt in (address, address.upper()):
        errors, _ = await submit(inbound, alice.email, rcpt, request_from(alice.email, rcpt))
        assert errors == {}
    assert await suppressions_of(client, sender) == {"alice@example.test": "unsubscribe"}
    [event] = await feed(client, sender, "unsubscribed")
    assert event["recipient_id"] == alice.recipient_id
    assert event["data"]["source"] == "mailto"
    listed = await inbound_list(client, sender)
    assert [m["outcome"] for m in listed] == ["unsubscribe", "unsubscribe"]
    assert {m["recipient_id"] for m in listed} == {alice.recipient_id}
    again = await send(client, sender, to=["alice@example.test"])
    assert again["recipients"][0]["status"] == "dropped"


async def test_a_message_with_a_group_leaves_the_group_only(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Callable[[], Awaitable[int]],
    settings: Settings,
    db: Database,
    inbound: int,
) -> None:
    deals = await make_group(db, sender, "Deals")
    body = {
        "personalizations": [{"to": [{"email": "alice@example.test"}]}],
        "from": {"email": sender.address()},
        "subject": "Offers",
        "content": [{"type": "text/plain", "value": "50% off"}],
        "asm": {"group_id": deals},
    }
    response = await client.post("/v3/mail/send", json=body, headers=sender.headers)
    assert response.status_code == 202, response.text
    await deliver()
    await mx.wait_for(1)
    message_id = response.headers["x-message-id"]
    view = (await client.get(f"/v1/messages/{message_id}", headers=sender.headers)).json()
    [recipient] = view["recipients"]
    alice = Delivered(sender.account_id, message_id, recipient["id"], "alice@example.test")
    address = address_of(settings, sender, alice)
    await submit(inbound, alice.email, address, request_from(alice.email, address))
    async with db.session() as session:
        emails = (await session.execute(select(GroupSuppression.email))).scalars().all()
    assert emails == ["alice@example.test"]
    assert await suppressions_of(client, sender) == {}
    [left] = await feed(client, sender, "group_unsubscribed")
    assert left["data"]["asm_group_id"] == deals


async def test_a_bounce_to_the_address_unsubscribes_nobody(
    client: httpx.AsyncClient,
    sender: Sender,
    deliver_to: DeliverTo,
    settings: Settings,
    inbound: int,
) -> None:
    [alice] = await deliver_to("alice@example.test")
    address = address_of(settings, sender, alice)
    await submit(inbound, "", address, request_from("mailer-daemon@example.test", address))
    assert await suppressions_of(client, sender) == {}
    [stored] = await inbound_list(client, sender)
    assert stored["outcome"] != "unsubscribe"


async def test_a_forged_or_foreign_unsubscribe_address_is_refused(
    sender: Sender, deliver_to: DeliverTo, settings: Settings, inbound: int
) -> None:
    [alice] = await deliver_to("alice@example.test")
    address = address_of(settings, sender, alice)
    local, _, domain = address.rpartition("@")
    forged = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    foreign = local + "@elsewhere.test"
    for rcpt in (forged, foreign):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await submit(inbound, alice.email, rcpt, request_from(alice.email, rcpt))
