"""Batch changes racing each other and racing sends: a cancel is never undone by a pause or
resume that read the batch before it, and a send checked before a cancel but written after
it has its recipients cancelled, not sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from app.batches import service as batches
from app.batches.models import Batch, BatchStatus
from app.common.fields import EmailAddress
from app.core.db import Database
from app.core.errors import BadRequest
from app.messages import service as messages
from app.messages.submission import Personalization, Submission
from tests.asm.test_accept_cost import POLICY, principal_of
from tests.batches.test_batches import new_batch, statuses
from tests.support import Sender

Change = Callable[..., Awaitable[batches.BatchChange]]


async def cancel_elsewhere(db: Database, sender: Sender, batch_id: str) -> None:
    """Cancel the batch in another transaction, committed."""
    async with db.session() as session:
        batch = await batches.get_batch(session, account_id=sender.account_id, batch_id=batch_id)
        await batches.cancel(session, batch=batch)
        await session.commit()


@pytest.mark.parametrize("change", [batches.pause, batches.resume])
async def test_a_pause_or_resume_never_undoes_a_cancel_committed_after_its_read(
    client: httpx.AsyncClient, sender: Sender, db: Database, change: Change
) -> None:
    batch_id = await new_batch(client, sender)
    async with db.session() as session:
        stale = await batches.get_batch(session, account_id=sender.account_id, batch_id=batch_id)
        assert stale.status == BatchStatus.ACTIVE
        await session.commit()  # the read's transaction is over; the object is still held
        await cancel_elsewhere(db, sender, batch_id)
        with pytest.raises(BadRequest, match="cancelled"):
            await change(session, batch=stale)
        await session.rollback()
    async with db.session() as session:
        assert (await session.get_one(Batch, batch_id)).status == BatchStatus.CANCELLED


async def test_a_send_checked_before_a_cancel_and_written_after_it_is_cancelled(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    batch_id = await new_batch(client, sender)
    principal = await principal_of(db, sender)
    submission = Submission(
        sender=EmailAddress(email=sender.address()),
        personalizations=(Personalization(to=(EmailAddress(email="late@example.test"),)),),
        subject="Campaign",
        text="Deals.",
        batch_id=batch_id,
    )
    async with db.session() as session:
        checked = await messages.check(
            session, principal=principal, submission=submission, policy=POLICY
        )
        assert checked is not None
        assert checked.batch_status == BatchStatus.ACTIVE
        await session.commit()
    await cancel_elsewhere(db, sender, batch_id)
    async with db.session() as session:
        [accepted] = await messages.write_messages(session, [checked])
        await session.commit()
    assert [r.status for r in accepted.recipients] == ["cancelled"]
    assert await statuses(client, sender, accepted.message_id) == {"late@example.test": "cancelled"}
