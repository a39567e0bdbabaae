"""Worker processes against one database and one Redis: a destination's connection limit
holds across all of them, and every recipient arrives once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio

from app.core.config import Settings
from app.core.db import Database
from tests.fakes.mx import ScriptedMX
from tests.support import ApiServer, Sender
from tests.test_crash import Workers, wait_until_delivered

MESSAGES = 120
LIMIT = 3  # connections to the one destination, for all workers together


@pytest_asyncio.fixture
async def workers(settings: Settings, tmp_path: Path) -> AsyncIterator[Workers]:
    """Worker processes with a tight per-destination connection limit."""
    pool = Workers(settings, tmp_path)
    pool.env |= {"COLUMBA_DESTINATION_MAX_CONNECTIONS": str(LIMIT)}
    yield pool
    await pool.stop_all()


async def peak_connections(mx: ScriptedMX, done: asyncio.Event) -> int:
    """The most connections the MX had open at once, sampled until `done`."""
    peak = 0
    while not done.is_set():
        peak = max(peak, len(mx.connections))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.005)
    return peak


async def test_two_workers_share_one_destination_limit(
    api: ApiServer, sender: Sender, mx: ScriptedMX, workers: Workers, db: Database
) -> None:
    mx.stall_at("EOD", 0.05)  # connections stay busy, so both workers want more of them
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        for index in range(MESSAGES):
            body = {
                "from": sender.address(),
                "to": [f"r{index}@example.test"],
                "subject": "limits",
                "text": "x",
            }
            response = await http.post("/v1/send", json=body, headers=sender.headers)
            assert response.status_code == 202, response.text
    done = asyncio.Event()
    sampler = asyncio.create_task(peak_connections(mx, done))
    workers.start(2)
    await wait_until_delivered(db, MESSAGES)
    done.set()
    assert 1 <= await sampler <= LIMIT
    copies = Counter(address for message in mx.messages for address in message.rcpt_tos)
    assert len(copies) == MESSAGES
    assert set(copies.values()) == {1}
