"""Erasing one address (DELETE /v1/addresses/{email}): no table keeps a trace of it, the other
recipients of its messages keep theirs and are still delivered, and mail to it stays dropped."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from app.addresses.models import Erasure
from app.core.config import Settings
from app.core.db import Base, Database
from app.models import Recipient
from tests.bounces.test_inbound import render, submit
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_key, make_sender
from tests.test_end_to_end import Deliver, message_view, send, status_of
from tests.tracking.support import make_group

ERASED = "alice@example.test"


def _text_of(value: Any) -> str:
    """A stored value as lower-case text, whatever its type."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace").lower()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False).lower()
    return str(value).lower()


async def tables_naming(db: Database, address: str) -> dict[str, int]:
    """Rows of every table (every column, text, JSON or bytes) that contain `address`: read
    generically, so a table added later that stores addresses is caught too."""
    found: dict[str, int] = {}
    async with db.session() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table))).all()
            hits = sum(any(address in _text_of(value) for value in row) for row in rows)
            if hits:
                found[table.name] = hits
    return found


async def erase(client: httpx.AsyncClient, key: str, email: str) -> httpx.Response:
    """DELETE /v1/addresses/{email} with `key`."""
    return await client.delete(f"/v1/addresses/{email}", headers={"Authorization": f"Bearer {key}"})


async def mail_naming_alice(
    client: httpx.AsyncClient,
    db: Database,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
) -> tuple[str, str]:
    """Everything that can hold an address: a message to her alone (bounced by a DSN, which
    suppresses her), a message she shares with Bob (personalized, tagged; Bob's copy
    deferred), a group opt-out. Returns the two message ids."""
    group = await make_group(db, sender)
    opt_out = await client.post(
        f"/v3/asm/groups/{group}/suppressions",
        json={"recipient_emails": [ERASED]},
        headers=sender.headers,
    )
    assert opt_out.status_code == 201, opt_out.text
    # Through /v1/send with an Idempotency-Key: the stored 202 lists her address.
    first = await client.post(
        "/v1/send",
        json={
            "from": sender.address(),
            "to": [ERASED],
            "subject": "Hello",
            "text": "Hi.",
            "metadata": {"user": "Alice@Example.test"},
        },
        headers=sender.headers | {"Idempotency-Key": "erase-test-1"},
    )
    assert first.status_code == 202, first.text
    alone = first.json()
    await deliver()
    [received] = await mx.wait_for(1)
    view = await message_view(client, sender, alone["id"])
    dsn = render(
        "postfix_user_unknown.eml",
        VERP=received.mail_from,
        RCPT=ERASED,
        RCPT_UPPER="Alice@Example.test",
        MESSAGE_ID=view["message_id"],
    )
    assert (await submit(inbound, received.mail_from, dsn))[0] == {}
    mx.reply_at("RCPT", 450, "4.2.1 busy", to="bob@example.test", times=1)
    response = await client.post(
        "/v3/mail/send",
        json=shared_mail(sender),
        headers=sender.headers,
    )
    assert response.status_code == 202, response.text
    await deliver()
    return alone["id"], response.headers["X-Message-Id"]


def shared_mail(sender: Sender) -> dict[str, Any]:
    """A SendGrid send to Alice and Bob that names Alice in every place it can."""
    alice = {
        "to": [{"email": "Alice@Example.test", "name": "Alice Liddell"}],
        "substitutions": {"-who-": ERASED},
        "custom_args": {"contact": ERASED},
    }
    bob = {"to": [{"email": "bob@example.test", "name": "Bob"}], "substitutions": {"-who-": "Bob"}}
    return {
        "personalizations": [alice, bob],
        "from": {"email": sender.address()},
        "reply_to": {"email": ERASED},
        "subject": "Hello -who-",
        "content": [{"type": "text/plain", "value": "Dear -who-, write to alice@example.test."}],
    }


async def test_an_erased_address_leaves_no_trace_and_others_are_untouched(
    client: httpx.AsyncClient,
    db: Database,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
) -> None:
    alone, shared = await mail_naming_alice(client, db, sender, mx, deliver, inbound)
    assert "recipients" in await tables_naming(db, ERASED)
    eraser = await make_key(db, account=sender.account_name, scopes=["addresses.erase"])

    response = await erase(client, eraser, "Alice@Example.test")

    assert response.status_code == 200, response.text
    counts = response.json()["counts"]
    assert counts["messages_deleted"] == 1
    assert counts["recipients_deleted"] == 2
    assert counts["suppressions_tombstoned"] == 1
    assert counts["group_suppressions_tombstoned"] == 1
    assert counts["messages_scrubbed"] == 1
    assert counts["idempotency_keys_deleted"] == 1
    assert counts["inbound_messages_deleted"] == 1
    assert await tables_naming(db, ERASED) == {}
    # The suppression lists show the tombstones, not the address.
    listed = (await client.get("/v1/suppressions", headers=sender.headers)).json()
    assert [s["email"][:7] for s in listed["suppressions"]] == ["erased:"]
    bounces = await client.get("/v3/suppression/bounces", headers=sender.headers)
    assert bounces.status_code == 200
    assert [b["email"][:7] for b in bounces.json()] == ["erased:"]
    gone = await client.get(f"/v1/messages/{alone}", headers=sender.headers)
    assert gone.status_code == 404
    # Bob's copy of the shared message is as it was, and is still delivered.
    view = await message_view(client, sender, shared)
    assert [r["email"] for r in view["recipients"]] == ["bob@example.test"]
    assert status_of(view, "bob@example.test") == "deferred"
    async with db.session() as session:
        erasure = (await session.execute(select(Erasure))).scalar_one()
    assert erasure.account_id == sender.account_id
    assert erasure.actor.startswith("key:")
    assert erasure.counts == counts


async def test_mail_to_an_erased_address_stays_dropped_and_others_still_go(
    client: httpx.AsyncClient,
    db: Database,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    inbound: int,
    travel: Any,
) -> None:
    _, shared = await mail_naming_alice(client, db, sender, mx, deliver, inbound)
    assert (await erase(client, sender.key, ERASED)).status_code == 200
    mx.messages.clear()

    again = await send(client, sender, to=[ERASED, "carol@example.test"])
    grouped = await send(client, sender, to=["ALICE@example.test"])

    view = await message_view(client, sender, again["id"])
    assert status_of(view, ERASED) == "dropped"
    assert status_of(view, "carol@example.test") != "dropped"
    assert (await message_view(client, sender, grouped["id"]))["recipients"][0]["status"] == (
        "dropped"
    )
    travel(timedelta(minutes=6))  # Bob's retry is due
    await deliver()
    received = await mx.wait_for(2)
    assert sorted(r for message in received for r in message.rcpt_tos) == [
        "bob@example.test",
        "carol@example.test",
    ]
    view = await message_view(client, sender, shared)
    assert status_of(view, "bob@example.test") == "delivered"


async def test_erasing_needs_the_scope_a_valid_address_and_touches_only_the_account(
    client: httpx.AsyncClient, db: Database, sender: Sender, dns_server: FakeDNS, settings: Settings
) -> None:
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    theirs = await send(client, other, to=[ERASED])
    reader = await make_key(db, account=sender.account_name, scopes=["messages.read"])

    forbidden = await erase(client, reader, ERASED)
    invalid = await erase(client, sender.key, "not-an-address")
    nothing = await erase(client, sender.key, ERASED)

    assert forbidden.status_code == 403
    assert invalid.status_code == 400
    assert invalid.json()["errors"][0]["field"] == "email"
    assert nothing.status_code == 200
    assert nothing.json()["counts"] == {}
    async with db.session() as session:
        erasures = await session.scalar(select(func.count()).select_from(Erasure))
        kept = await session.scalar(select(func.count()).select_from(Recipient))
    assert erasures == 1  # the one that ran, not the refused ones
    assert kept == 1
    assert (await message_view(client, other, theirs["id"]))["recipients"][0]["email"] == ERASED
