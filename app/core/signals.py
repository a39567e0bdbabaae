"""Invalidations between processes, over Redis pub/sub.

A process that changes a key, a sending domain or an account's tracking settings (the CLI, an
API replica) announces it on INVALIDATE_CHANNEL; every API and listener process drops the
entry from its caches. Pub/sub delivers at most once, so the caches' TTL (at most a second)
is the bound that holds when an announcement is lost; after a lost connection every cache is
cleared, since whatever was announced meanwhile never arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core import cache

log = logging.getLogger(__name__)

INVALIDATE_CHANNEL = "columba:invalidate"
KEY = "key"  # an API key, by public prefix
DOMAINS = "domains"  # an account's sending domains, by account id
TRACKING = "tracking"  # an account's tracking settings, by account id
RECONNECT_DELAY = 1.0


def encode(kind: str, key: str) -> str:
    """The wire form of an invalidation."""
    return f"{kind}:{key}"


def decode(data: bytes | str) -> tuple[str, str]:
    """(kind, key) from the wire form."""
    text = data.decode() if isinstance(data, bytes) else data
    kind, _, key = text.partition(":")
    return kind, key


async def announce(redis: Redis, kind: str, key: str) -> None:
    """Drop `kind`/`key` here at once and tell every other process; Redis trouble is logged
    (the TTL still bounds how long others see the old value)."""
    cache.invalidate(kind, key)
    try:
        await redis.publish(INVALIDATE_CHANNEL, encode(kind, key))
    except (RedisError, OSError) as exc:
        log.warning("could not announce an invalidation (caches expire anyway): %s", exc)


async def announce_via(connect: Callable[[], Awaitable[Redis]], kind: str, key: str) -> None:
    """announce() on a connection from `connect` (an API process's shared pool); a Redis that
    cannot be reached is logged like a failed publish."""
    cache.invalidate(kind, key)
    try:
        redis = await connect()
    except (RedisError, OSError) as exc:
        log.warning("could not announce an invalidation (caches expire anyway): %s", exc)
        return
    await announce(redis, kind, key)


async def announce_to(redis_url: str, kind: str, key: str) -> None:
    """announce() over a connection of its own (for the CLI)."""
    redis = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        await announce(redis, kind, key)
    finally:
        await redis.aclose()


class Listener:
    """Applies announced invalidations to this process's caches until stopped."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        """Listen in the background."""
        self._task = asyncio.create_task(self._run(), name="columba-invalidations")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        """Subscribe, apply, and after any trouble start again with empty caches."""
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                log.warning("invalidation channel lost (retrying): %s", exc)
            self.subscribed.clear()
            cache.clear_all()
            await asyncio.sleep(RECONNECT_DELAY)

    async def _listen(self) -> None:
        """One subscription's life."""
        redis = Redis.from_url(self.redis_url, socket_connect_timeout=2)
        try:
            async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(INVALIDATE_CHANNEL)
                # Whatever was cached before the subscription may have missed announcements.
                cache.clear_all()
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        cache.invalidate(*decode(message["data"]))
        finally:
            await redis.aclose()
