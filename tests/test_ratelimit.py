"""The shared fixed-window rate limiter, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from redis.asyncio import Redis

from app.core.ratelimit import FixedWindowLimiter


async def test_limit_holds_across_concurrent_clients(
    redis_url: str, travel: Callable[[timedelta], None]
) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(3)]
    try:
        limiters = [FixedWindowLimiter(client, prefix="test:rl") for client in clients]
        results = await asyncio.gather(
            *(limiters[i % 3].hit("key", limit=10, window=60) for i in range(25))
        )
        assert sum(result.allowed for result in results) == 10
        assert min(result.remaining for result in results) == 0
        assert {result.reset_at % 60 for result in results} == {0}
        travel(timedelta(seconds=61))  # next window
        fresh = await limiters[0].hit("key", limit=10, window=60)
        assert fresh.allowed
        assert fresh.remaining == 9
        assert fresh.headers()["X-RateLimit-Limit"] == "10"
    finally:
        for client in clients:
            await client.aclose()
