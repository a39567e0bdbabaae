"""`columba inbound` stops as the submission listener does (app.common.smtp_shutdown): a new
session gets 421 4.3.2 at once, an open one may finish its command within the grace period,
then gets 421 and is closed."""

from __future__ import annotations

import asyncio

from app.bounces.inbound import start_inbound
from app.common.smtp_shutdown import SHUTTING_DOWN, ListenerShutdown
from app.core.config import Settings
from app.core.db import Database
from tests.bounces.conftest import INBOUND_HOST
from tests.fakes.mx import free_port


async def reply(reader: asyncio.StreamReader) -> str:
    """The last line of the next reply."""
    while True:
        line = (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip()
        if line[3:4] != "-":
            return line


async def test_inbound_refuses_new_sessions_and_closes_open_ones_with_421(
    settings: Settings, db: Database
) -> None:
    port = free_port()
    shutdown = ListenerShutdown()
    server = await start_inbound(settings, db, host=INBOUND_HOST, port=port, shutdown=shutdown)
    try:
        reader, writer = await asyncio.open_connection(INBOUND_HOST, port)
        assert (await reply(reader)).startswith("220 ")
        stopping = asyncio.create_task(shutdown.run(grace=1.0))
        await asyncio.sleep(0.1)
        new_reader, new_writer = await asyncio.open_connection(INBOUND_HOST, port)
        assert await reply(new_reader) == SHUTTING_DOWN
        assert await new_reader.read() == b""
        new_writer.close()
        writer.write(b"EHLO bouncer.test\r\n")
        assert (await reply(reader)).startswith("250 ")  # the grace period is not over
        assert await reply(reader) == SHUTTING_DOWN  # then it is
        assert await reader.read() == b""
        writer.close()
        await stopping
    finally:
        server.close()
        await server.wait_closed()
