"""MTA-STS policies in the database: workers storing a domain's first policy at the same
moment both succeed (one upsert), and a newer policy replaces the stored one."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.delivery.mta_sts import CachedPolicy, StsPolicy
from app.tlspolicy.store import DatabasePolicyStore


def policy(policy_id: str, *mx: str) -> CachedPolicy:
    """A fetched enforce policy of race.test."""
    text = "version: STSv1\nmode: enforce\n" + "".join(f"mx: {m}\n" for m in mx)
    now = clock.now()
    return CachedPolicy(
        "race.test",
        policy_id,
        StsPolicy("enforce", mx, 86400, text + "max_age: 86400\n"),
        now,
        now + timedelta(days=1),
    )


async def test_workers_storing_the_first_policy_at_once_both_succeed(settings: Settings) -> None:
    databases = [Database(settings) for _ in range(4)]  # one per worker process
    try:
        stores = [DatabasePolicyStore(database) for database in databases]
        for round_ in range(5):  # each round: everyone stores the same new policy at once
            fetched = policy(f"id{round_}", f"mx{round_}.race.test")
            await asyncio.gather(*(store.save(fetched) for store in stores))
            loaded = await stores[0].load("race.test")
            assert loaded is not None
            assert loaded.policy_id == f"id{round_}"
            assert loaded.policy.mx == (f"mx{round_}.race.test",)
            assert loaded.expires_at == fetched.expires_at
    finally:
        for database in databases:
            await database.dispose()
