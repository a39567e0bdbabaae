"""Outcomes recorded in a group commit are fenced by lease token: a recipient another worker
took over (the first one's lease ran out) keeps the new owner's state, on both databases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy import select

from app.core import clock
from app.core.db import Database
from app.delivery.replies import synthetic
from app.delivery.retry import Decision
from app.events.models import Event
from app.messages import dispatch
from app.messages.dispatch import Claim, Outcome
from app.messages.models import Attempt, Recipient, RecipientStatus
from tests.support import Sender
from tests.test_end_to_end import send

Travel = Callable[[timedelta], None]
LEASE = timedelta(seconds=30)


async def claim(db: Database, message_id: str, limit: int) -> Claim:
    """Lease up to `limit` of the message's due recipients, committed."""
    async with db.session() as session:
        claimed = await dispatch.claim(session, lease=LEASE, limit=limit, message_id=message_id)
        await session.commit()
    return claimed


def delivered(claimed: Claim) -> list[Outcome]:
    """A 250 for every recipient of a claim."""
    decision = Decision(RecipientStatus.DELIVERED, synthetic(250, "2.0.0", "ok"))
    return [
        Outcome(recipient=r, decision=decision, started_at=clock.now(), duration_ms=5)
        for r in claimed.recipients
    ]


async def test_a_late_batch_writes_only_the_recipients_still_its_own(
    client: httpx.AsyncClient, sender: Sender, db: Database, travel: Travel
) -> None:
    accepted = await send(client, sender, to=[f"r{i}@example.test" for i in range(3)])
    stale = await claim(db, accepted["id"], limit=3)
    travel(LEASE + timedelta(seconds=1))  # the first worker stalled: its leases ran out
    [taken] = (await claim(db, accepted["id"], limit=1)).recipients
    async with db.session() as session:
        recorded = await dispatch.record_outcomes(session, outcomes=delivered(stale))
        await session.commit()
    assert recorded == 2
    async with db.session() as session:
        rows = {r.id: r for r in (await session.execute(select(Recipient))).scalars()}
        attempts = (await session.execute(select(Attempt.recipient_id))).scalars().all()
        events = (await session.execute(select(Event.recipient_id, Event.type))).all()
    assert rows[taken.id].status == "sending"  # the new owner's, untouched
    assert rows[taken.id].lease_token == taken.token
    assert rows[taken.id].attempt_count == 0
    others = set(rows) - {taken.id}
    assert {rows[r].status for r in others} == {"delivered"}
    assert {rows[r].lease_token for r in others} == {None}
    assert sorted(attempts) == sorted(others)
    assert {r for r, kind in events if kind == "delivered"} == others


async def test_the_owner_records_after_a_late_batch_was_fenced_out(
    client: httpx.AsyncClient, sender: Sender, db: Database, travel: Travel
) -> None:
    accepted = await send(client, sender, to=["one@example.test"])
    stale = await claim(db, accepted["id"], limit=1)
    travel(LEASE + timedelta(seconds=1))
    fresh = await claim(db, accepted["id"], limit=1)
    async with db.session() as session:
        assert await dispatch.record_outcomes(session, outcomes=delivered(stale)) == 0
        assert await dispatch.record_outcomes(session, outcomes=delivered(fresh)) == 1
        await session.commit()
    async with db.session() as session:
        [row] = (await session.execute(select(Recipient))).scalars().all()
    assert row.status == "delivered"
    assert row.attempt_count == 1
