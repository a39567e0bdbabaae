"""How the submission listener stops (RFC 5321 §3.8): from the signal on, a new session is
greeted with 421 4.3.2 and closed, while the open ones may go on for the grace period; then
each is answered 421 and closed."""

from __future__ import annotations

import asyncio
import time

from app.common.smtp_shutdown import SHUTTING_DOWN
from tests.submission.clients import Listener
from tests.submission.test_connections import Session, closed_after_greeting, greeting, session


async def command(stream: Session, line: str) -> str:
    """Send a command; the last line of its reply."""
    reader, writer = stream
    writer.write(line.encode() + b"\r\n")
    while True:
        reply = (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip()
        if reply[3:4] != "-":
            return reply


async def test_new_sessions_get_421_while_open_ones_finish_then_get_421(
    submission: Listener,
) -> None:
    async with session(submission) as open_one:
        assert (await greeting(open_one)).startswith("220 ")
        assert (await command(open_one, "EHLO client.test")).startswith("250 ")
        began = time.monotonic()
        closing = asyncio.create_task(submission.server.close(grace=1.0))
        await asyncio.sleep(0.1)
        async with session(submission) as new_one:
            assert await greeting(new_one) == SHUTTING_DOWN
            assert await closed_after_greeting(new_one)
        assert (await command(open_one, "NOOP")).startswith("250 ")  # within the grace
        assert await greeting(open_one) == SHUTTING_DOWN  # the grace is over: 421, closed
        assert await closed_after_greeting(open_one)
        await closing
    assert 1.0 <= time.monotonic() - began < 4


async def test_a_listener_whose_sessions_end_stops_without_waiting_out_the_grace(
    submission: Listener,
) -> None:
    async with session(submission) as open_one:
        await greeting(open_one)
        began = time.monotonic()
        closing = asyncio.create_task(submission.server.close(grace=30))
        await asyncio.sleep(0.1)
        assert (await command(open_one, "QUIT")).startswith("221 ")
        await closing
    assert time.monotonic() - began < 3


async def test_a_session_over_starttls_that_quits_does_not_hold_the_stop(
    submission: Listener,
) -> None:
    client = await asyncio.to_thread(submission.smtp)
    began = time.monotonic()
    closing = asyncio.create_task(submission.server.close(grace=30))
    await asyncio.sleep(0.1)
    await asyncio.to_thread(client.quit)
    await closing
    assert time.monotonic() - began < 3
