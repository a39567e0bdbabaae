"""Group commit for the hot tracking endpoints: the opens, clicks and one-click unsubscribes
that arrive while a transaction is being written share the next one (app.common.group_commit),
so a burst of pixel fetches costs a few statements per batch instead of per request. Each
request is answered only once its event is committed; when a shared transaction fails, its
hits are written again one by one, so one bad hit cannot fail the others."""

from __future__ import annotations

import logging

from app.common.group_commit import GroupCommit, Pending, settle
from app.core.db import Database
from app.tracking.hits import Hit, record_hits

log = logging.getLogger(__name__)

MAX_BATCH = 200  # hits per transaction
# Two transactions in flight: a hit's wait is mostly PostgreSQL's round trips and commit, not
# the API's CPU (bench/tracking.py: the API used a quarter of a core at the rate it reached
# with one), so a second transaction collects and writes the next batch meanwhile.
CONCURRENCY = 2


class TrackingCommitter(GroupCommit[Hit, bool]):
    """Writes hits, one transaction per batch, `concurrency` transactions at once."""

    def __init__(self, database: Database, *, concurrency: int = CONCURRENCY) -> None:
        super().__init__(concurrency=concurrency, max_batch=MAX_BATCH)
        self.database = database

    async def _commit(self, batch: list[Pending[Hit, bool]]) -> None:
        """One transaction for the batch; if it fails, one per hit."""
        try:
            written = await self._write([pending.item for pending in batch])
        except Exception as exc:
            if len(batch) == 1:
                settle(batch[0].outcome, exc)
                return
            log.warning(
                "a group commit of %d hits failed (%s); writing each alone", len(batch), exc
            )
            for pending in batch:
                await self._commit([pending])
            return
        for pending, result in zip(batch, written, strict=True):
            settle(pending.outcome, result)

    async def _write(self, hits: list[Hit]) -> list[bool]:
        """Write and commit the hits in one transaction."""
        async with self.database.session() as session:
            written = await record_hits(session, hits)
            await session.commit()
        return written
