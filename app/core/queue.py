"""Redis as a wake-up signal: losing one delays delivery, never loses it.

After a commit the API publishes one message on WAKE_CHANNEL, however many messages it
accepted; every worker subscribed to the channel wakes its pump, which claims whatever is
due from the database. Nothing is stored in Redis: a worker that misses a signal (Redis
down, restarted, flushed) still claims on its idle poll, and the sweeper publishes again
whenever the database holds due work.

arq remains the workers' runner for periodic jobs; a `deliver_message` job still wakes the
pump, for anything that enqueues one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.exceptions import RedisError

from app.core.redis_batch import RedisBatch
from app.core.throttled_log import ThrottledWarning

log = logging.getLogger(__name__)
# Every group commit wakes the workers: while Redis is away, one line now and then says so.
_WAKE_FAILED = ThrottledWarning(log)

DELIVER_JOB = "deliver_message"
SWEEP_JOB = "sweep_due_recipients"
QUEUE_NAME = "columba:queue"
WAKE_CHANNEL = "columba:wake"  # pub/sub: "recipients may be due", the payload is a count


def delivery_job_id(message_id: str) -> str:
    """One pending delivery job per message at a time (for what still enqueues jobs)."""
    return f"deliver:{message_id}"


def redis_settings(url: str) -> RedisSettings:
    """arq connection settings from a redis:// or unix:// URL."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 1
    settings.conn_timeout = 2
    return settings


class Queue:
    """Wakes the workers; Redis trouble is logged, never raised to the sender."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._pool: ArqRedis | None = None
        self._batch: RedisBatch | None = None
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

    async def batch(self) -> RedisBatch:
        """Commands of concurrent callers in one round trip (app/core/redis_batch.py): the
        API's rate-limit counts and its wake-ups share it."""
        if self._batch is None:
            pool = await self.pool()
            if self._batch is None:
                self._batch = RedisBatch(pool)
        return self._batch

    async def wake_deliveries(self, message_ids: Iterable[str]) -> int:
        """Tell the workers that these messages' recipients are due: one PUBLISH for any
        number. Returns how many messages were signalled (0 when Redis is unreachable)."""
        count = len(list(message_ids))
        return count if count and await self.wake_workers(count) else 0

    async def wake_workers(self, count: int = 1) -> bool:
        """Publish one wake-up; False (logged) when Redis is unreachable."""
        try:
            batch = await self.batch()
            await batch.call(lambda pipe: pipe.publish(WAKE_CHANNEL, count))
        except (RedisError, OSError) as exc:
            # The database holds the work; idle polls and the sweeper find it.
            _WAKE_FAILED.warning(
                "could not wake the workers (their polls will find the work): %s", exc
            )
            return False
        return True

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
