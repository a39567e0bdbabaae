"""Session limits of the submission listener: per client IP and in all, answered with 421 at
the greeting (RFC 5321 §3.1) so that one client cannot hold every session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from tests.submission.clients import Listener

StartSubmission = Callable[..., Awaitable[Listener]]
Session = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def session(listener: Listener, source: str = "127.0.0.1") -> AsyncIterator[Session]:
    """A raw connection to the STARTTLS port from `source`."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", listener.port, local_addr=(source, 0)
    )
    try:
        yield reader, writer
    finally:
        writer.close()
        await writer.wait_closed()


async def greeting(stream: Session) -> str:
    """The first reply line."""
    reader, _ = stream
    line = await asyncio.wait_for(reader.readline(), 5)
    return line.decode().rstrip()


async def closed_after_greeting(stream: Session) -> bool:
    """True when the server closes the connection (reads end of stream)."""
    reader, _ = stream
    return await asyncio.wait_for(reader.read(), 5) == b""


async def test_sessions_past_the_per_ip_limit_get_421(
    start_submission: StartSubmission,
) -> None:
    listener = await start_submission(submission_max_connections_per_ip=2)
    async with AsyncExitStack() as open_sessions:
        for _ in range(2):
            stream = await open_sessions.enter_async_context(session(listener))
            assert (await greeting(stream)).startswith("220 ")
        async with session(listener) as third:
            reply = await greeting(third)
            assert reply == "421 4.7.0 Too many connections from 127.0.0.1; try again later"
            assert await closed_after_greeting(third)
        # Another client address is not affected by 127.0.0.1's share.
        async with session(listener, source="127.0.0.2") as other:
            assert (await greeting(other)).startswith("220 ")
    # Once the sessions are gone, the address may connect again.
    await _until_sessions(listener, 0)
    async with session(listener) as again:
        assert (await greeting(again)).startswith("220 ")


async def test_sessions_past_the_listener_limit_get_421(
    start_submission: StartSubmission,
) -> None:
    listener = await start_submission(submission_max_connections=2)
    async with session(listener, "127.0.0.1") as first, session(listener, "127.0.0.2") as second:
        assert (await greeting(first)).startswith("220 ")
        assert (await greeting(second)).startswith("220 ")
        async with session(listener, "127.0.0.3") as third:
            assert await greeting(third) == "421 4.3.2 Too many connections; try again later"
            assert await closed_after_greeting(third)


async def _until_sessions(listener: Listener, count: int) -> None:
    """Wait until the listener has noticed closed connections."""
    for _ in range(100):
        if len(listener.server.handler.connections) == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(listener.server.handler.connections)} sessions remain")
