"""app.asm.service as the unsubscribe endpoints and `columba inbound` use it: idempotent opt-outs
and resubscribes, and SendGrid's rule that a deleted group's unsubscribe is a global one."""

from __future__ import annotations

import httpx

from app.asm import service
from app.core.config import Settings
from app.core.db import Database
from app.messages.models import Message
from tests.asm.test_api import create
from tests.fakes.dns import FakeDNS
from tests.support import Sender, make_sender
from tests.test_end_to_end import send


async def test_unsubscribe_and_resubscribe_are_idempotent(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    news = await create(client, sender, "News")
    account = sender.account_id
    async with db.session() as session:
        for group_id in (news["id"], None):
            first = await service.unsubscribe(
                session, account_id=account, email="Ann@Example.test", group_id=group_id
            )
            again = await service.unsubscribe(
                session, account_id=account, email="ann@example.test", group_id=group_id
            )
            assert (first, again) == (True, False)
        assert await service.groups_left(session, account_id=account, email="ann@example.test") == {
            news["id"]
        }
        assert await service.globally_unsubscribed(
            session, account_id=account, email="ANN@example.test"
        )
        for group_id in (news["id"], None):
            back = await service.resubscribe(
                session, account_id=account, email="ann@example.test", group_id=group_id
            )
            twice = await service.resubscribe(
                session, account_id=account, email="ann@example.test", group_id=group_id
            )
            assert (back, twice) == (True, False)
        assert await service.groups_left(session, account_id=account, email="ann@example.test") == (
            set()
        )
        await session.commit()


async def test_a_deleted_or_foreign_groups_unsubscribe_is_global(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    dns_server: FakeDNS,
    settings: Settings,
) -> None:
    other = await make_sender(db, dns_server, settings, account="globex", domain="globex.test")
    theirs = await create(client, other, "Theirs")
    gone = await create(client, sender, "Gone")
    await client.delete(f"/v3/asm/groups/{gone['id']}", headers=sender.headers)
    account = sender.account_id
    async with db.session() as session:
        for email, group_id in (("a@example.test", gone["id"]), ("b@example.test", theirs["id"])):
            assert await service.unsubscribe(
                session, account_id=account, email=email, group_id=group_id
            )
            assert await service.globally_unsubscribed(session, account_id=account, email=email)
        await session.commit()
        assert await service.members(session, group_id=theirs["id"]) == []
    listed = await client.get("/v3/suppression/unsubscribes", headers=sender.headers)
    assert sorted(e["email"] for e in listed.json()) == ["a@example.test", "b@example.test"]


async def test_what_a_preference_page_shows(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    news = await create(client, sender, "News")
    promo = await create(client, sender, "Promo")
    gone = await create(client, sender, "Gone")
    await client.delete(f"/v3/asm/groups/{gone['id']}", headers=sender.headers)
    await client.post(
        f"/v3/asm/groups/{promo['id']}/suppressions",
        json={"recipient_emails": ["ann@example.test"]},
        headers=sender.headers,
    )
    accepted = await send(
        client,
        sender,
        to=["ann@example.test"],
        unsubscribe_group=promo["id"],
        groups_to_display=[news["id"], promo["id"]],
    )
    async with db.session() as session:
        message = await session.get(Message, accepted["id"])
        assert message is not None
        shown = service.groups_to_display(message.settings, message.asm_group_id)
        assert shown == [promo["id"], news["id"]]
        page = await service.preferences(
            session,
            account_id=sender.account_id,
            email="Ann@example.test",
            group_ids=[*shown, gone["id"]],
        )
    assert [(group.name, suppressed) for group, suppressed in page] == [
        ("Promo", True),
        ("News", False),
    ]
    assert service.groups_to_display({}, None) == []
