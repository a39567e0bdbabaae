"""A worker's lease renewal and its group commit of outcomes run at once over the same rows
(the renewer is its own task): both lock recipients in id order, so they never deadlock."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.core.db import Database
from app.messages import dispatch
from app.messages.dispatch import Outcome
from tests.messages.test_fencing import LEASE, claim, delivered
from tests.support import Sender
from tests.test_end_to_end import send

ROUNDS = 8
RECIPIENTS = 300


async def renew(db: Database, token: str) -> int:
    """The renewer's transaction: extend the claim's leases."""
    async with db.session() as session:
        renewed = await dispatch.renew_leases(session, tokens=[token], lease=LEASE)
        await session.commit()
    return renewed


async def record(db: Database, outcomes: list[Outcome]) -> int:
    """The group commit's transaction: record the claim's outcomes."""
    async with db.session() as session:
        recorded = await dispatch.record_and_release(session, outcomes=outcomes, released=[])
        await session.commit()
    return recorded


async def test_renewing_and_recording_one_claim_at_once_never_deadlock(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: nothing to deadlock")
    for round_ in range(ROUNDS):
        to = [f"lock{round_}-{i}@example.test" for i in range(RECIPIENTS)]
        claimed = await claim(db, (await send(client, sender, to=to))["id"], limit=RECIPIENTS)
        # Outcomes come in the order transactions end, whatever the rows' order: here the
        # reverse of the claim's. Before rows were locked in id order, this deadlocked.
        outcomes = delivered(claimed)[::-1]
        renewed, recorded = await asyncio.gather(
            renew(db, claimed.recipients[0].token), record(db, outcomes)
        )
        assert recorded == RECIPIENTS  # renewal never takes a lease away
        assert renewed in (0, RECIPIENTS)  # before the recording, or after it (none left)
