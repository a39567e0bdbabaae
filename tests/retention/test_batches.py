"""Retention purges in bounded batches: each transaction writes at most its limit of rows
(cascades included) and commits before the next, so no lock is held for long however much
mail has piled up (the million-row figures are bench.purge's)."""

from __future__ import annotations

from datetime import timedelta

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.retention import service as retention
from tests.retention.seed import row_counts, seed_finished_mail
from tests.support import Sender

SEEDED = 10_000  # messages: 50,000 rows with their recipients, attempts, events and tags
LIMIT = 2500  # the bound holds for any limit; fewer batches keep the test short


async def test_each_purge_transaction_writes_at_most_its_limit_and_commits(
    db: Database, sender: Sender, settings: Settings
) -> None:
    old = clock.now() - settings.retention - timedelta(days=1)
    await seed_finished_mail(
        db, account_id=sender.account_id, domain_id=sender.domain.id, count=SEEDED, created=old
    )
    left = sum((await row_counts(db)).values())
    assert left == 5 * SEEDED
    before = clock.now() - settings.retention
    batches = []
    while True:
        async with db.session() as session:
            batch = await retention.purge_batch(session, before=before, limit=LIMIT)
            await session.commit()
        # Counted from another session: only what the batch committed shows.
        now_left = sum((await row_counts(db)).values())
        assert left - now_left == batch.total <= LIMIT
        left = now_left
        batches.append(batch.total)
        if batch.total < LIMIT:
            break
    assert left == 0
    assert len(batches) == 5 * SEEDED // LIMIT + 1
    assert max(batches) == LIMIT


async def test_run_batches_stops_after_max_batches_and_resumes(
    db: Database, sender: Sender, settings: Settings
) -> None:
    old = clock.now() - settings.retention - timedelta(days=1)
    await seed_finished_mail(
        db, account_id=sender.account_id, domain_id=sender.domain.id, count=500, created=old
    )
    before = clock.now() - settings.retention
    first = await retention.run_batches(
        db, retention.purge_batch, before=before, limit=300, max_batches=2
    )
    assert first.total == 600
    rest = await retention.run_batches(
        db, retention.purge_batch, before=before, limit=300, max_batches=100
    )
    assert rest.total == 1900
    assert rest["messages"] + first["messages"] == 500
    assert sum((await row_counts(db)).values()) == 0
