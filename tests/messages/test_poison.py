"""A recipient that keeps killing its workers is dropped with the reason rather than claimed
again forever (issue 10, item 1). The count is per recipient and runs on only while its
leases run out in a row; a recipient on its last chance gets a worker's attention alone, so
that those which happened to be in flight with the one that kills do not reach the bound
with it. (tests/test_crash.py kills real worker processes while they render.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from app.core import clock
from app.core.db import Database
from app.messages import dispatch
from app.messages.models import Recipient
from tests.fakes.mx import ScriptedMX
from tests.support import Sender
from tests.test_end_to_end import Deliver, message_view, send

Travel = Callable[[timedelta], None]
LEASE = timedelta(seconds=30)


async def die_holding(db: Database, travel: Travel, message_id: str) -> list[int]:
    """A worker claims the message's due recipients and dies before any outcome: nothing is
    recorded and its lease runs out. Returns the claimed recipients' counts."""
    async with db.session() as session:
        claim = await dispatch.claim(session, lease=LEASE, message_id=message_id, max_expiries=3)
        await session.commit()
    travel(LEASE + timedelta(seconds=1))
    return [recipient.lease_expiries for recipient in claim.recipients]


async def expiries_of(db: Database, message_id: str) -> list[int]:
    """The stored counts of a message's recipients."""
    async with db.session() as session:
        query = select(Recipient.lease_expiries).where(Recipient.message_id == message_id)
        return list((await session.execute(query)).scalars())


async def test_a_recipient_its_workers_keep_dying_on_is_dropped_with_the_reason(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    db: Database,
    travel: Travel,
    deliver: Deliver,
) -> None:
    accepted = await send(client, sender, to=["poison@example.test"])
    assert [await die_holding(db, travel, accepted["id"]) for _ in range(3)] == [[0], [1], [2]]
    await deliver()  # the pump's claim finds it expired a third time (MAX_LEASE_EXPIRIES=3)
    assert mx.messages == []
    view = await message_view(client, sender, accepted["id"])
    [recipient] = view["recipients"]
    assert recipient["status"] == "dropped"
    event = recipient["events"][-1]
    assert event["type"] == "dropped"
    assert event["data"]["response"].startswith("550 5.3.0 delivery stopped: the lease")
    assert "ran out 3 times in a row" in event["data"]["response"]
    travel(timedelta(hours=1))
    assert await die_holding(db, travel, accepted["id"]) == []  # never claimed again


async def test_an_outcome_starts_the_count_again(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    db: Database,
    travel: Travel,
    deliver: Deliver,
) -> None:
    accepted = await send(client, sender, to=["unlucky@example.test"])
    mx.reply_at("RCPT", 450, "try later", times=1)
    await die_holding(db, travel, accepted["id"])
    await die_holding(db, travel, accepted["id"])
    await deliver()  # claimed with its third lease: deferred, an outcome
    assert await expiries_of(db, accepted["id"]) == [0]
    travel(timedelta(minutes=6))  # past the retry
    await die_holding(db, travel, accepted["id"])
    await die_holding(db, travel, accepted["id"])
    await deliver()  # five leases ran out in all, never three in a row
    view = await message_view(client, sender, accepted["id"])
    assert view["recipients"][0]["status"] == "delivered"


async def test_last_chances_are_claimed_apart(
    client: httpx.AsyncClient, sender: Sender, db: Database, travel: Travel
) -> None:
    twice = [await send(client, sender, to=[f"twice{i}@example.test"]) for i in range(2)]
    once = await send(client, sender, to=["once@example.test"])
    for accepted in twice:
        await die_holding(db, travel, accepted["id"])
        await die_holding(db, travel, accepted["id"])
    await die_holding(db, travel, once["id"])
    fresh = await send(client, sender, to=["fresh@example.test"])
    async with db.session() as session:
        regular = await dispatch.claim(
            session, lease=LEASE, limit=10, max_expiries=3, last_chances=0
        )
        last = await dispatch.claim(session, lease=LEASE, limit=10, max_expiries=3, last_chances=1)
        await session.commit()
    # A recipient one worker died on is claimed with fresh ones: a crash with hundreds in
    # flight is recovered at full speed.
    assert {(r.message_id, r.lease_expiries, r.last_chance) for r in regular.recipients} == {
        (once["id"], 1, False),
        (fresh["id"], 0, False),
    }
    [alone] = last.recipients
    assert alone.message_id in {accepted["id"] for accepted in twice}
    assert (alone.lease_expiries, alone.last_chance) == (2, True)


async def test_a_worker_has_one_last_chance_in_flight_at_a_time(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    db: Database,
    travel: Travel,
    deliver: Deliver,
) -> None:
    for i in range(4):
        accepted = await send(client, sender, to=[f"twice{i}@example.test"])
        await die_holding(db, travel, accepted["id"])
        await die_holding(db, travel, accepted["id"])
    for i in range(4):
        accepted = await send(client, sender, to=[f"once{i}@example.test"])
        await die_holding(db, travel, accepted["id"])
    mx.stall_at("EOD", 0.2)  # each delivery stays in flight a while
    most = {1: 0, 2: 0}

    async def watch() -> None:
        while True:
            async with db.session() as session:
                for count in most:
                    leased = select(func.count()).where(
                        Recipient.lease_expiries == count,
                        Recipient.lease_expires_at > clock.now(),
                    )
                    most[count] = max(most[count], int(await session.scalar(leased) or 0))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        await deliver()
    finally:
        watcher.cancel()
    assert len(await mx.wait_for(8)) == 8
    assert most[2] == 1  # last chances: one at a time
    assert most[1] > 1  # a single lease lost: claimed together
