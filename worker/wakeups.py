"""The workers' end of the wake-up signal (app.core.queue.WAKE_CHANNEL).

A signal only says "look now": the pump claims from the database, which holds the work. So a
lost signal costs latency, not mail: the pump also looks on its idle poll, the sweeper
publishes again while due work exists, and after a reconnect the listener wakes the pump at
once, since signals published meanwhile were missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.queue import WAKE_CHANNEL

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0


async def listen(redis: Redis, on_wake: Callable[[], None]) -> None:
    """Call `on_wake` for every signal, forever, reconnecting after Redis trouble."""
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(WAKE_CHANNEL)
            on_wake()  # whatever was signalled while we were not subscribed
            async for _ in pubsub.listen():
                on_wake()
        except (RedisError, OSError) as exc:
            log.warning("wake-up channel lost (idle polls cover it meanwhile): %s", exc)
        except Exception:  # a failing wake must not stop the listening for good
            log.exception("handling a wake-up failed")
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 5
        await asyncio.sleep(RECONNECT_SECONDS)
