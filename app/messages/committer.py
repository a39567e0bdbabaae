"""Group commit for the send APIs: sends checked while a transaction is being written wait for
the next one and share it, written with one statement per table (write_messages).

Each request is checked in its own session first (key, sending domain, template, batch), so a
refused send never joins a transaction. Its 202 still comes only after the transaction holding
its message committed (CHECKLIST: nothing acknowledged that is not durable), and the delivery
wake-ups of the whole transaction follow the commit. When a shared transaction fails, each of
its sends is written again on its own, so one bad send cannot fail the others; an idle API
commits each send on its own, at once.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.service import Principal
from app.common.group_commit import GroupCommit, Pending, settle
from app.core.db import Database
from app.core.queue import Queue
from app.messages.service import (
    SANDBOXED,
    Accepted,
    AcceptPolicy,
    Checked,
    check,
    write_messages,
)
from app.messages.submission import Submission

log = logging.getLogger(__name__)

MAX_BATCH = 100  # sends per transaction: bounds what one failure sends back to be rewritten
# A send with more recipients than this is its own transaction: its rows already make one
# large transaction, and sharing would hold its delivery back until every other bulk send of
# the batch is written too.
SOLO_RECIPIENTS = 50


class SendCommitter(GroupCommit[Checked, Accepted]):
    """Writes checked sends, one transaction per batch, `concurrency` transactions at once."""

    def __init__(self, database: Database, queue: Queue, *, concurrency: int) -> None:
        super().__init__(concurrency=concurrency, max_batch=MAX_BATCH)
        self.database = database
        self.queue = queue

    async def accept(
        self,
        session: AsyncSession,
        *,
        principal: Principal,
        submission: Submission,
        policy: AcceptPolicy,
    ) -> Accepted:
        """Check the send in the request's `session`, then write it with others; returns once
        it is committed (sandbox sends: once checked)."""
        checked = await check(session, principal=principal, submission=submission, policy=policy)
        if checked is None:
            return SANDBOXED
        if _recipient_count(checked) > SOLO_RECIPIENTS:
            return await self._write_alone(session, checked)
        # Give the request's connection back before waiting: requests that hold one while
        # waiting for the committer's would exhaust the pool under load.
        await session.close()
        return await self.submit(checked)

    async def _write_alone(self, session: AsyncSession, send: Checked) -> Accepted:
        """Write a bulk send in the request's own transaction, then wake its delivery."""
        [accepted] = await write_messages(session, [send])
        await session.commit()
        await self.queue.wake_deliveries([accepted.message_id])
        return accepted

    async def _commit(self, batch: list[Pending[Checked, Accepted]]) -> None:
        """One transaction for the batch; if it fails, one per send, so only a failing send
        fails. Every waiting request learns its outcome."""
        try:
            accepted = await self._write([pending.item for pending in batch])
        except Exception as exc:
            if len(batch) == 1:
                settle(batch[0].outcome, exc)
                return
            log.warning(
                "a group commit of %d sends failed (%s); writing each alone", len(batch), exc
            )
            for pending in batch:
                await self._commit([pending])
            return
        try:
            await self.queue.wake_deliveries([a.message_id for a in accepted])
        except Exception:  # committed is committed: the sweeper wakes what this did not
            log.exception("could not wake the deliveries of %d sends", len(accepted))
        for pending, result in zip(batch, accepted, strict=True):
            settle(pending.outcome, result)

    async def _write(self, sends: list[Checked]) -> list[Accepted]:
        """Write and commit the sends in one transaction."""
        async with self.database.session() as session:
            accepted = await write_messages(session, sends)
            await session.commit()
        return accepted


def _recipient_count(send: Checked) -> int:
    """How many recipients the send has."""
    return sum(len(personal.recipients) for personal in send.submission.personalizations)
