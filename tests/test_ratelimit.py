"""The shared fixed-window rate limiter, against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError

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


async def test_concurrent_hits_share_round_trips_and_each_count_is_exact(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.script_flush()  # the script is loaded by the first pipeline that needs it
        limiter = FixedWindowLimiter(client, prefix="test:batch")
        results = await asyncio.gather(
            *(limiter.hit(f"key{i % 2}", limit=30, window=3600) for i in range(100))
        )
        # 50 hits per key: 30 allowed each, and every remaining count from 29 down to 0 seen.
        assert sum(result.allowed for result in results) == 60
        remaining = sorted(r.remaining for r in results if r.allowed)
        assert remaining == sorted(list(range(30)) * 2)
        assert limiter.batch.round_trips < 10  # the first alone, the rest grouped
    finally:
        await client.aclose()


async def test_a_redis_failure_reaches_every_caller_of_the_round_trip(redis_url: str) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        limiter = FixedWindowLimiter(client, prefix="test:down")
        results = await asyncio.gather(
            *(limiter.hit("key", limit=5, window=60) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(result, RedisError | OSError) for result in results), results
    finally:
        await client.aclose()
