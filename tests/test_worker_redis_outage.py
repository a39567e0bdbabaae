"""A worker outlives a Redis outage (issue 17): arq's polling loop used to end the process at
the first Redis error, although Redis only carries wake-ups and periodic jobs and the
delivery pump claims from the database on its own."""

from __future__ import annotations

import logging

import pytest
from arq.connections import ArqRedis

from app.core.config import Settings
from tests.fakes.mx import free_port
from worker.settings import ResilientWorker, build_worker


async def test_a_poll_without_redis_waits_instead_of_ending_the_worker(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = ArqRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    worker = build_worker(
        settings, "redis://127.0.0.1:1/0", handle_signals=False, redis_pool=nowhere
    )
    assert isinstance(worker, ResilientWorker)
    try:
        with caplog.at_level(logging.WARNING, logger="worker.settings"):
            await worker._poll_iteration()  # arq's own Worker raises ConnectionError here
    finally:
        await nowhere.aclose()
    assert "Redis unavailable, delivering from the database meanwhile" in caplog.text
