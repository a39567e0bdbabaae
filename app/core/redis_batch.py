"""Redis commands of concurrent callers, sent together: one round trip per group.

Requests that arrive together each need a rate-limit count, and each group commit a delivery
wake-up. Sent one by one they cost a round trip (and a pooled connection) each; here whoever
calls while a round trip is in flight joins the next one, so an idle process still answers
at once and a busy one makes one round trip per group. Each caller gets the replies of its own
commands, in order, and the commands keep the order they were given in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

Build = Callable[[Pipeline], None]  # adds a caller's commands to the shared pipeline


@dataclass(slots=True)
class _Call:
    build: Build
    future: asyncio.Future[list[Any]]
    count: int = field(default=0)


class RedisBatch:
    """Sends every waiting caller's commands in one pipeline, one pipeline at a time."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._waiting: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self.round_trips = 0  # for tests and benchmarks

    async def call(self, build: Build) -> list[Any]:
        """Run the commands `build` adds; their replies. Redis errors are raised to every
        caller of the round trip that failed."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Call(build, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_while_waiting())
        return await future

    async def _send_while_waiting(self) -> None:
        """Send what waits, then what arrived meanwhile, until nothing waits."""
        while self._waiting:
            calls, self._waiting = self._waiting, []
            await self._send(calls)

    async def _send(self, calls: list[_Call]) -> None:
        """One pipeline for `calls`; each future gets its slice of the replies."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for call in calls:
                    before = len(pipe.command_stack)
                    call.build(pipe)
                    call.count = len(pipe.command_stack) - before
                self.round_trips += 1
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        start = 0
        for call in calls:
            mine = replies[start : start + call.count]
            start += call.count
            if call.future.done():  # the caller went away (a cancelled request)
                continue
            error = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if error is not None:
                call.future.set_exception(error)
            else:
                call.future.set_result(mine)
