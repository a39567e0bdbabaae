"""Line 8 of `make bench`: one worker's peak RSS with a large queue (goal ≤ 200 MB).

The worker is stopped (SIGSTOP) while `recipients` recipients are accepted through
`/v3/mail/send` (1,000 personalizations a request), then resumed; its peak RSS (VmHWM) is
read after it has drained the queue for a while. The phases live in bench/worker.py.
"""

from __future__ import annotations

import argparse

from app.core.db import Database
from bench.stack import ROOT
from bench.worker import memory, running

DRAIN_SECONDS = 120  # long enough for many claim batches; the queue need not be empty


DEFAULT_REDIS = "redis://127.0.0.1:6379/12"


async def measure(
    postgres_url: str, redis_url: str | None, recipients: int = 100_000, quick: bool = False
) -> dict[str, float]:
    """The memory figures of one worker with `recipients` queued."""
    args = argparse.Namespace(
        postgres=postgres_url, redis=redis_url or DEFAULT_REDIS, src=str(ROOT)
    )
    async with running(args) as bench:
        database = Database(bench.settings)
        try:
            seconds = 20 if quick else DRAIN_SECONDS
            return await memory(bench, database, recipients, seconds)
        finally:
            await database.dispose()
