"""Sends with an unsubscribe group: refused when the group is not the account's (v3, native,
SMTP), writing nothing; recipients who opted out of the group, or out of everything, dropped
with SendGrid's reason; resubscribing restores delivery."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest_asyncio

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.messages.models import Message
from tests.asm.test_api import create
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.messages.test_send_validation import count_rows
from tests.sendgrid.test_mail_send import mail
from tests.submission.clients import QUEUED, Listener
from tests.submission.test_refusals import mime
from tests.support import Sender, make_sender
from tests.test_end_to_end import Deliver, message_view, send


async def opt_out(client: httpx.AsyncClient, sender: Sender, group_id: int, *emails: str) -> None:
    """Add addresses to the group's suppressions."""
    response = await client.post(
        f"/v3/asm/groups/{group_id}/suppressions",
        json={"recipient_emails": list(emails)},
        headers=sender.headers,
    )
    assert response.status_code == 201, response.text


async def v3_send(client: httpx.AsyncClient, sender: Sender, **fields: Any) -> httpx.Response:
    """POST /v3/mail/send."""
    return await client.post("/v3/mail/send", json=mail(sender, **fields), headers=sender.headers)


def statuses(view: dict[str, Any]) -> dict[str, str]:
    """Each recipient's status in a message view."""
    return {r["email"]: r["status"] for r in view["recipients"]}


def dropped_event(view: dict[str, Any], email: str) -> dict[str, Any]:
    """The data of a recipient's dropped event."""
    recipient = next(r for r in view["recipients"] if r["email"] == email)
    [event] = recipient["events"]
    assert event["type"] == "dropped"
    data: dict[str, Any] = event["data"]
    return data


@pytest_asyncio.fixture
async def other(db: Database, dns_server: FakeDNS, settings: Settings) -> Sender:
    """A second account, with groups of its own."""
    return await make_sender(db, dns_server, settings, account="globex", domain="globex.test")


async def test_v3_send_with_an_unknown_or_foreign_group_is_refused(
    client: httpx.AsyncClient, sender: Sender, other: Sender, db: Database
) -> None:
    theirs = await create(client, other, "Theirs")
    mine = await create(client, sender, "Mine")
    before = await count_rows(db)
    for asm, field in (
        ({"group_id": theirs["id"]}, "asm.group_id"),
        ({"group_id": 2**31 - 1}, "asm.group_id"),
        ({"group_id": mine["id"], "groups_to_display": [mine["id"], theirs["id"]]},
         "asm.groups_to_display.1"),
    ):  # fmt: skip
        response = await v3_send(client, sender, asm=asm)
        assert response.status_code == 400, response.text
        [error] = response.json()["errors"]
        assert error["field"] == field
        assert "is not a group of this account" in error["message"]
    too_many = await v3_send(
        client, sender, asm={"group_id": mine["id"], "groups_to_display": [mine["id"]] * 26}
    )
    assert too_many.status_code == 400
    assert too_many.json()["errors"][0]["field"] == "asm.groups_to_display"
    assert await count_rows(db) == before
    accepted = await v3_send(
        client, sender, asm={"group_id": mine["id"], "groups_to_display": [mine["id"]]}
    )
    assert accepted.status_code == 202, accepted.text


async def test_native_send_with_an_unknown_or_foreign_group_is_refused(
    client: httpx.AsyncClient, sender: Sender, other: Sender, db: Database
) -> None:
    theirs = await create(client, other, "Theirs")
    mine = await create(client, sender, "Mine")
    body = {"from": sender.address(), "to": ["a@example.test"], "subject": "Hi", "text": "Hi."}
    before = await count_rows(db)
    for fields, field in (
        ({"unsubscribe_group": theirs["id"]}, "unsubscribe_group"),
        ({"unsubscribe_group": mine["id"], "groups_to_display": [theirs["id"]]},
         "groups_to_display.0"),
        ({"groups_to_display": [mine["id"]]}, None),
        ({"unsubscribe_group": "1"}, "unsubscribe_group"),
        ({"unsubscribe_group": 0}, "unsubscribe_group"),
    ):  # fmt: skip
        response = await client.post("/v1/send", json={**body, **fields}, headers=sender.headers)
        assert response.status_code == 400, (fields, response.text)
        assert response.json()["errors"][0]["field"] == field
    assert await count_rows(db) == before
    accepted = await send(
        client,
        sender,
        to=["a@example.test"],
        unsubscribe_group=mine["id"],
        groups_to_display=[mine["id"]],
    )
    view = await message_view(client, sender, accepted["id"])
    [recipient] = view["recipients"]
    assert recipient["events"][0]["data"]["asm_group_id"] == mine["id"]


async def test_smtp_submission_with_an_unknown_group_is_refused(
    submission: Listener, client: httpx.AsyncClient, sender: Sender, other: Sender, db: Database
) -> None:
    theirs = await create(client, other, "Theirs")
    mine = await create(client, sender, "Mine")

    def submit(group_id: int) -> tuple[int, bytes]:
        data = mime(sender, f"X-SMTPAPI: {json.dumps({'asm_group_id': group_id})}")
        with submission.smtp(login=sender.key) as smtp:
            smtp.mail(sender.address())
            smtp.rcpt("left@example.test")
            return smtp.data(data)

    before = await count_rows(db)
    code, reply = await asyncio.to_thread(submit, theirs["id"])
    assert code == 554
    assert (
        reply
        == (
            f"5.6.0 Message refused: X-SMTPAPI: 'asm_group_id' {theirs['id']} is not an "
            "unsubscribe group of this account"
        ).encode()
    )
    assert await count_rows(db) == before
    await opt_out(client, sender, mine["id"], "left@example.test")
    code, reply = await asyncio.to_thread(submit, mine["id"])
    assert code == 250, reply
    found = QUEUED.search(f"{code} {reply.decode()}")
    assert found is not None
    view = await message_view(client, sender, found.group(1))
    assert statuses(view) == {"left@example.test": "dropped"}
    assert dropped_event(view, "left@example.test")["asm_group_id"] == mine["id"]


async def test_opted_out_and_globally_unsubscribed_recipients_are_dropped(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    news = await create(client, sender, "News")
    promo = await create(client, sender, "Promo")
    await opt_out(client, sender, news["id"], "Left@example.test")
    await opt_out(client, sender, promo["id"], "promo-only@example.test")
    await client.post(
        "/v3/asm/suppressions/global",
        json={"recipient_emails": ["nothing@example.test"]},
        headers=sender.headers,
    )
    to = ["left@example.test", "promo-only@example.test", "nothing@example.test", "ok@example.test"]
    accepted = await send(client, sender, to=to, unsubscribe_group=news["id"])
    await deliver()
    [received] = await mx.wait_for(1)
    assert sorted(received.rcpt_tos) == ["ok@example.test", "promo-only@example.test"]
    view = await message_view(client, sender, accepted["id"])
    assert statuses(view) == {
        "left@example.test": "dropped",
        "promo-only@example.test": "delivered",
        "nothing@example.test": "dropped",
        "ok@example.test": "delivered",
    }
    left = dropped_event(view, "left@example.test")
    assert (left["reason"], left["suppression"], left["asm_group_id"]) == (
        "Unsubscribed Address",
        "group_unsubscribe",
        news["id"],
    )
    nothing = dropped_event(view, "nothing@example.test")
    assert (nothing["reason"], nothing["suppression"]) == ("Unsubscribed Address", "unsubscribe")
    # Without a group, an opt-out of a group does not matter; a global unsubscribe does.
    plain = await send(client, sender, to=["left@example.test", "nothing@example.test"])
    assert {r["email"]: r["status"] for r in plain["recipients"]} == {
        "left@example.test": "queued",
        "nothing@example.test": "dropped",
    }
    today = clock.now().date().isoformat()
    totals = (
        await client.get("/v1/stats", params={"start": today}, headers=sender.headers)
    ).json()["totals"]
    assert totals["unsubscribe_drops"] == 3


async def test_resubscribing_restores_delivery(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    news = await create(client, sender, "News")
    await opt_out(client, sender, news["id"], "back@example.test")
    response = await v3_send(
        client,
        sender,
        personalizations=[{"to": [{"email": "back@example.test"}]}],
        asm={"group_id": news["id"]},
    )
    first = await message_view(client, sender, response.headers["X-Message-Id"])
    assert statuses(first) == {"back@example.test": "dropped"}
    removed = await client.delete(
        f"/v3/asm/groups/{news['id']}/suppressions/back@example.test", headers=sender.headers
    )
    assert removed.status_code == 204
    response = await v3_send(
        client,
        sender,
        personalizations=[{"to": [{"email": "back@example.test"}]}],
        asm={"group_id": news["id"]},
    )
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.rcpt_tos == ["back@example.test"]
    second = await message_view(client, sender, response.headers["X-Message-Id"])
    assert statuses(second) == {"back@example.test": "delivered"}


async def test_only_bypass_list_management_bypasses_group_opt_outs(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    news = await create(client, sender, "News")
    await opt_out(client, sender, news["id"], "left@example.test")
    await client.post(
        "/v3/asm/suppressions/global",
        json={"recipient_emails": ["nothing@example.test"]},
        headers=sender.headers,
    )
    to = [{"email": "left@example.test"}, {"email": "nothing@example.test"}]
    for setting, expected in (
        ("bypass_unsubscribe_management", {"left@example.test": "dropped",
                                           "nothing@example.test": "queued"}),
        ("bypass_list_management", {"left@example.test": "queued",
                                    "nothing@example.test": "queued"}),
    ):  # fmt: skip
        response = await v3_send(
            client,
            sender,
            personalizations=[{"to": to}],
            asm={"group_id": news["id"]},
            mail_settings={setting: {"enable": True}},
        )
        assert response.status_code == 202, response.text
        view = await message_view(client, sender, response.headers["X-Message-Id"])
        assert statuses(view) == expected, setting


async def test_a_group_is_usable_at_once_and_deleting_it_refuses_its_sends(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    for attempt in range(3):  # no cache anywhere may remember "no such group"
        group = await create(client, sender, f"Fresh {attempt}")
        response = await v3_send(client, sender, asm={"group_id": group["id"]})
        assert response.status_code == 202, response.text
        await client.delete(f"/v3/asm/groups/{group['id']}", headers=sender.headers)
        refused = await v3_send(client, sender, asm={"group_id": group["id"]})
        assert refused.status_code == 400


async def test_groups_to_display_are_kept_with_the_message(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    news = await create(client, sender, "News")
    promo = await create(client, sender, "Promo")
    accepted = await send(
        client,
        sender,
        to=["a@example.test"],
        unsubscribe_group=news["id"],
        groups_to_display=[news["id"], promo["id"]],
    )
    response = await v3_send(
        client, sender, asm={"group_id": promo["id"], "groups_to_display": [news["id"]]}
    )
    async with db.session() as session:
        native = await session.get(Message, accepted["id"])
        v3 = await session.get(Message, response.headers["X-Message-Id"])
    assert native is not None
    assert v3 is not None
    assert (native.asm_group_id, native.settings["asm"]) == (
        news["id"],
        {"group_id": news["id"], "groups_to_display": [news["id"], promo["id"]]},
    )
    assert (v3.asm_group_id, v3.settings["asm"]) == (
        promo["id"],
        {"group_id": promo["id"], "groups_to_display": [news["id"]]},
    )
