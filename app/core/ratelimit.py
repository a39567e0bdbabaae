"""Rate limits shared by every process through Redis: fixed windows, as SendGrid's
X-RateLimit-Limit / -Remaining / -Reset headers describe them."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import clock
from app.core.redis_batch import RedisBatch

# INCRBY then EXPIRE on first use, atomically: concurrent replicas never lose a count.
_HIT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return count
"""


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """Whether this hit is allowed, and the numbers for the X-RateLimit headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # Unix time when the window resets

    def headers(self) -> dict[str, str]:
        """SendGrid's rate-limit response headers."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


class FixedWindowLimiter:
    """At most `limit` units per `window` seconds per key, counted in Redis.

    Counts are exact across every process sharing the Redis (no local share of the limit to
    overshoot with); concurrent hits share one round trip (app/core/redis_batch.py)."""

    def __init__(self, redis: Redis, *, prefix: str, batch: RedisBatch | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(_HIT)
        self.batch = batch or RedisBatch(redis)

    async def hit(self, key: str, *, limit: int, window: int, cost: int = 1) -> RateLimitResult:
        """Count `cost` units against `key`; refused (and still counted) past the limit."""
        now = int(clock.now().timestamp())
        index = now // window
        reset_at = (index + 1) * window
        redis_key = f"{self.prefix}:{key}:{index}"
        try:
            [count] = await self.batch.call(
                lambda pipe: self._add_hit(pipe, redis_key, cost=cost, window=window)
            )
        except NoScriptError:  # a new (or flushed) Redis: load the script, count again
            await self.redis.script_load(_HIT)
            [count] = await self.batch.call(
                lambda pipe: self._add_hit(pipe, redis_key, cost=cost, window=window)
            )
        count = int(count)
        return RateLimitResult(
            allowed=count <= limit, limit=limit, remaining=max(0, limit - count), reset_at=reset_at
        )

    def _add_hit(self, pipe: Pipeline, redis_key: str, *, cost: int, window: int) -> None:
        """The counting script by its hash, queued on a shared pipeline. Not registered with
        the pipeline: redis-py would then ask SCRIPT EXISTS before every pipeline, a second
        round trip each time; a missing script is loaded when Redis says so (hit())."""
        pipe.evalsha(self._script.sha, 1, redis_key, str(cost), str(window + 1))


STATE_KEY = "rate_limit_headers"


class RateLimitHeaders:
    """Copies the X-RateLimit-* headers of the request's limiter hit onto its response,
    whatever produced the response (the route, a validation error or an error handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers when the response starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra: dict[str, str] = scope.get("state", {}).get(STATE_KEY) or {}
                if extra:
                    names = {name.lower().encode() for name in extra}
                    headers = [h for h in message.get("headers", []) if h[0].lower() not in names]
                    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
