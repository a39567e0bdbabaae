"""A suppressed address is accepted but dropped: never attempted, with the reason in its event."""

from __future__ import annotations

import httpx

from app.core.db import Database
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType
from tests.fakes.mx import ScriptedMX
from tests.support import Sender
from tests.test_end_to_end import Deliver, message_view, send


async def test_suppressed_recipient_is_dropped_and_others_delivered(
    client: httpx.AsyncClient, sender: Sender, db: Database, mx: ScriptedMX, deliver: Deliver
) -> None:
    async with db.session() as session:
        await suppressions.suppress(
            session,
            account_id=sender.account_id,
            email="Gone@Example.test",
            type=SuppressionType.BOUNCE,
            reason="550 5.1.1 user unknown",
        )
        await session.commit()
    accepted = await send(client, sender, to=["gone@example.test", "here@example.test"])
    assert {r["email"]: r["status"] for r in accepted["recipients"]} == {
        "gone@example.test": "dropped",
        "here@example.test": "queued",
    }
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.rcpt_tos == ["here@example.test"]
    view = await message_view(client, sender, accepted["id"])
    gone = next(r for r in view["recipients"] if r["email"] == "gone@example.test")
    assert gone["attempts"] == []
    [event] = gone["events"]
    assert event["type"] == "dropped"
    assert event["data"]["reason"] == "Bounced Address"


async def test_suppressing_twice_keeps_one_entry(sender: Sender, db: Database) -> None:
    async with db.session() as session:
        for _ in range(2):
            await suppressions.suppress(
                session,
                account_id=sender.account_id,
                email="twice@example.test",
                type=SuppressionType.MANUAL,
                reason="asked",
            )
        await session.commit()
        assert await suppressions.count(session, account_id=sender.account_id) == 1
