"""A running `columba inbound` for the bounce tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from app.bounces.inbound import start_inbound
from app.core.config import Settings
from app.core.db import Database
from tests.fakes.mx import free_port

INBOUND_HOST = "127.0.0.9"


@pytest_asyncio.fixture
async def inbound(settings: Settings, db: Database) -> AsyncIterator[int]:
    """A running inbound listener; yields its port."""
    port = free_port()
    server = await start_inbound(settings, db, host=INBOUND_HOST, port=port)
    yield port
    server.close()
    await server.wait_closed()
