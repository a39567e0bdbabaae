"""A recipient that keeps killing its workers is dropped with the reason rather than claimed
again forever (issue 10, item 1). The count is per recipient, runs on only while its leases
run out in a row, and suspects are kept apart so that a worker's death counts against them
alone. (tests/test_crash.py kills real worker processes while they render.)"""

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


async def test_suspects_are_claimed_apart_from_fresh_recipients(
    client: httpx.AsyncClient, sender: Sender, db: Database, travel: Travel
) -> None:
    lost = [await send(client, sender, to=[f"lost{i}@example.test"]) for i in range(2)]
    for accepted in lost:
        await die_holding(db, travel, accepted["id"])
    fresh = await send(client, sender, to=[f"fresh{i}@example.test" for i in range(3)])
    async with db.session() as session:
        only_fresh = await dispatch.claim(session, lease=LEASE, limit=10, suspects=0)
        one_suspect = await dispatch.claim(session, lease=LEASE, limit=10, suspects=1)
        await session.commit()
    assert {r.message_id for r in only_fresh.recipients} == {fresh["id"]}
    assert [r.lease_expiries for r in only_fresh.recipients] == [0, 0, 0]
    [suspect] = one_suspect.recipients
    assert suspect.message_id in {accepted["id"] for accepted in lost}
    assert suspect.lease_expiries == 1


async def test_a_worker_has_one_suspect_in_flight_at_a_time(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    db: Database,
    travel: Travel,
    deliver: Deliver,
) -> None:
    lost = [await send(client, sender, to=[f"lost{i}@example.test"]) for i in range(4)]
    for accepted in lost:
        await die_holding(db, travel, accepted["id"])
    mx.stall_at("EOD", 0.2)  # each delivery stays in flight a while
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            async with db.session() as session:
                leased = select(func.count()).where(
                    Recipient.lease_expiries > 0, Recipient.lease_expires_at > clock.now()
                )
                most = max(most, int(await session.scalar(leased) or 0))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        await deliver()
    finally:
        watcher.cancel()
    assert len(await mx.wait_for(4)) == 4
    assert most == 1
