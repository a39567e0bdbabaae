"""Destination limits while Redis is unreachable (issue 17): delivery goes on, each process
keeping to the limit on its own, and a transaction the MX took is reported as delivered,
never failed because Redis could not be told (it would be sent again)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio
from redis.asyncio import Redis

from app.delivery.mx import Destination, MXHost
from app.delivery.outbound import deliver
from app.delivery.pool import ConnectionPool
from app.delivery.smtp import Envelope, SmtpOptions
from app.delivery.throttle import DestinationKey, DestinationLimits, DestinationThrottle
from tests.fakes.mx import ScriptedMX, free_port

KEY = DestinationKey("mx:test", DestinationLimits(max_connections=2))
MESSAGE = b"From: a@sender.test\r\nTo: x@example.test\r\nSubject: hi\r\n\r\nHello\r\n"


@pytest_asyncio.fixture
async def unreachable_redis() -> AsyncIterator[Redis]:
    """A client of a Redis that is not there (nothing listens on its port)."""
    client = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    yield client
    await client.aclose()


async def test_limits_are_kept_per_process_without_redis(unreachable_redis: Redis) -> None:
    throttle = DestinationThrottle(unreachable_redis)
    granted = [await throttle.acquire_connection(KEY, token) for token in ("a", "b", "c")]
    assert granted == [True, True, False]
    await throttle.release_connection(KEY, "a")
    assert await throttle.acquire_connection(KEY, "c")
    await throttle.want(KEY)
    assert not await throttle.wanted(KEY)
    assert await throttle.slow_down(KEY) == 0.5  # reported, not kept: nowhere to keep it
    assert await throttle.rate_wait(DestinationKey("r", DestinationLimits(rate=1.0))) == 0.0


async def test_delivery_is_reported_while_redis_is_down(
    start_mx: Callable[..., Awaitable[ScriptedMX]], mx_port: int, unreachable_redis: Redis
) -> None:
    mx = await start_mx("127.0.0.2")
    options = SmtpOptions(
        port=mx_port, helo_name="mta.columba.test", connect_timeout=2, greeting_timeout=2,
        command_timeout=2, data_timeout=2, max_recipients=100,
    )  # fmt: skip
    pool = ConnectionPool(options, throttle=DestinationThrottle(unreachable_redis))
    destination = Destination("example.test", (MXHost("mx1.example.test", 10, ("127.0.0.2",)),))
    try:
        for address in ("one@example.test", "two@example.test"):  # the second reuses
            envelope = Envelope("a@sender.test", (address,), MESSAGE, False)
            result = await deliver(destination, envelope, pool, KEY)
            assert result.replies[address].code == 250
    finally:
        await pool.close()
    assert [message.rcpt_tos for message in mx.messages] == [
        ["one@example.test"],
        ["two@example.test"],
    ]
