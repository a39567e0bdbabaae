"""The arq queue as a wake-up signal: losing a job delays delivery, never loses it.

Jobs carry ids only. A delivery job's id is derived from the message, so repeated wake-ups
for one message collapse into one queued job; `keep_result=0` frees the id once it ran.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DELIVER_JOB = "deliver_message"
SWEEP_JOB = "sweep_due_recipients"
QUEUE_NAME = "columba:queue"
# Enqueues in flight at once (each holds a pooled Redis connection for its WATCH/MULTI).
WAKE_CONCURRENCY = 32


def delivery_job_id(message_id: str) -> str:
    """One pending delivery job per message at a time."""
    return f"deliver:{message_id}"


def redis_settings(url: str) -> RedisSettings:
    """arq connection settings from a redis:// or unix:// URL."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 1
    settings.conn_timeout = 2
    return settings


class Queue:
    """Enqueues delivery wake-ups; Redis trouble is logged, never raised to the sender."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._pool: ArqRedis | None = None
        self._creating = asyncio.Lock()  # concurrent first requests must share one pool

    async def pool(self) -> ArqRedis:
        """The connection pool, created on first use."""
        if self._pool is None:
            async with self._creating:
                if self._pool is None:
                    self._pool = await create_pool(
                        redis_settings(self.redis_url), default_queue_name=QUEUE_NAME
                    )
        return self._pool

    async def wake_deliveries(self, message_ids: Iterable[str]) -> int:
        """Enqueue a delivery job per message, WAKE_CONCURRENCY at a time; returns how many
        were enqueued."""
        ids = list(message_ids)
        enqueued = 0
        try:
            pool = await self.pool()
            for start in range(0, len(ids), WAKE_CONCURRENCY):
                chunk = ids[start : start + WAKE_CONCURRENCY]
                jobs = await asyncio.gather(*(self._enqueue(pool, m) for m in chunk))
                enqueued += sum(job is not None for job in jobs)
        except (RedisError, OSError) as exc:
            # The database holds the work; the sweeper enqueues it once Redis is back.
            log.warning("could not enqueue delivery (the sweeper will): %s", exc)
        return enqueued

    @staticmethod
    async def _enqueue(pool: ArqRedis, message_id: str) -> object:
        """One delivery job (None when one for the message is already waiting)."""
        return await pool.enqueue_job(DELIVER_JOB, message_id, _job_id=delivery_job_id(message_id))

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
