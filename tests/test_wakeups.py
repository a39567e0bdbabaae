"""Wake-ups: one PUBLISH after a commit wakes every worker's pump; a lost one is covered by
the sweeper, and Redis down at accept time loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
from redis.asyncio import Redis

from app.core.config import Settings
from app.core.queue import WAKE_CHANNEL, Queue
from tests.fakes.mx import ScriptedMX
from tests.support import ApiServer, Sender
from tests.test_end_to_end import send
from worker import jobs
from worker.runtime import Runtime

StartWorker = Callable[[], Awaitable[Runtime]]


@pytest_asyncio.fixture
async def sleepy_settings(settings: Settings) -> Settings:
    """Idle polls an hour apart: only a wake-up makes a worker look for work."""
    return settings.model_copy(update={"sweep_interval": timedelta(hours=1)})


@pytest_asyncio.fixture
async def start_worker(sleepy_settings: Settings, redis_url: str) -> AsyncIterator[StartWorker]:
    """Start worker runtimes listening on the wake-up channel; all closed after the test."""
    started: list[tuple[Runtime, Redis]] = []

    async def start() -> Runtime:
        redis = Redis.from_url(redis_url)
        runtime = Runtime(sleepy_settings, redis=redis)
        runtime.start()
        started.append((runtime, redis))
        await runtime.pump.drain()  # its first claim found nothing: now it sleeps
        await _subscribed(redis)
        return runtime

    yield start
    for runtime, redis in started:
        await runtime.close()
        await redis.aclose()


async def _subscribed(redis: Redis, timeout: float = 5) -> None:
    """Until some listener is subscribed to the wake-up channel."""
    async with asyncio.timeout(timeout):
        while not (await redis.pubsub_numsub(WAKE_CHANNEL))[0][1]:  # noqa: ASYNC110 (polling Redis)
            await asyncio.sleep(0.01)


async def test_an_accepted_send_wakes_a_sleeping_worker(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, start_worker: StartWorker
) -> None:
    await start_worker()
    await send(client, sender, to=["woken@example.test"])
    [message] = await mx.wait_for(1, timeout=10)  # long before its next idle poll
    assert message.rcpt_tos == ["woken@example.test"]


async def test_one_wake_up_wakes_every_worker(
    sleepy_settings: Settings, redis_url: str, start_worker: StartWorker
) -> None:
    workers = [await start_worker(), await start_worker()]
    before = [w.pump.empty_claims for w in workers]
    queue = Queue(redis_url)
    try:
        assert await queue.wake_deliveries(["a", "b", "c"]) == 3
        async with asyncio.timeout(5):
            while any(w.pump.empty_claims == n for w, n in zip(workers, before, strict=True)):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await queue.close()


async def test_a_lost_wake_up_is_covered_by_the_sweeper(
    sender: Sender,
    mx: ScriptedMX,
    sleepy_settings: Settings,
    redis_url: str,
    start_worker: StartWorker,
) -> None:
    await start_worker()
    # The API's Redis is unreachable: its wake-up is lost, the commit is not.
    offline = sleepy_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with ApiServer.running(offline) as server, httpx.AsyncClient(base_url=server.url) as http:
        await send(http, sender, to=["swept@example.test"])
    await asyncio.sleep(0.5)
    assert mx.messages == []  # nobody was told
    sweeper = Runtime(sleepy_settings)  # the worker whose turn it is to sweep
    queue = Queue(redis_url)
    ctx: dict[str, Any] = {"runtime": sweeper, "queue": queue}
    try:
        assert await jobs.sweep_due_recipients(ctx) == 1
    finally:
        await queue.close()
        await sweeper.close()
    [message] = await mx.wait_for(1, timeout=10)  # the sleeping worker heard the sweeper
    assert message.rcpt_tos == ["swept@example.test"]


async def test_the_sweeper_stays_quiet_when_nothing_is_due(
    sleepy_settings: Settings, redis_url: str
) -> None:
    sweeper = Runtime(sleepy_settings)
    queue = Queue(redis_url)
    try:
        assert await jobs.sweep_due_recipients({"runtime": sweeper, "queue": queue}) == 0
    finally:
        await queue.close()
        await sweeper.close()


async def test_waking_with_redis_down_reports_nothing_signalled() -> None:
    queue = Queue("redis://127.0.0.1:1/0")
    try:
        assert await queue.wake_deliveries(["m1"]) == 0
    finally:
        await queue.close()
