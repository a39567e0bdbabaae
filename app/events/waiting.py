"""Bounds on long polls (`GET /v1/events?wait=`): per API key and per process.

A waiting request holds no database connection, but each looks at the feed several times a
second and keeps a socket and a task; the bounds keep one client, or all of them together,
from tying up a process with waits."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from app.core.errors import TooManyRequests

RETRY_AFTER_SECONDS = 5  # a waiting poll ends within MAX_WAIT_SECONDS; most end sooner


class LongPolls:
    """The long polls waiting in this process, counted per API key."""

    def __init__(self, *, per_process: int, per_key: int) -> None:
        """At most `per_process` waiting in all, `per_key` for one API key."""
        self.per_process = per_process
        self.per_key = per_key
        self.waiting: Counter[str] = Counter()
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        """The process is stopping: waiting polls answer now (with what they have)."""
        self.stopping.set()

    @contextmanager
    def hold(self, key_id: str) -> Iterator[asyncio.Event]:
        """A place among the waiting polls for the block, and the event that ends the wait
        early; 429 when either bound is reached."""
        if self.waiting.total() >= self.per_process:
            raise _refusal(f"{self.per_process} requests are already waiting for events here")
        if self.waiting[key_id] >= self.per_key:
            raise _refusal(f"this API key already has {self.per_key} requests waiting for events")
        self.waiting[key_id] += 1
        try:
            yield self.stopping
        finally:
            self.waiting[key_id] -= 1
            if not self.waiting[key_id]:
                del self.waiting[key_id]


def _refusal(why: str) -> TooManyRequests:
    """429 in SendGrid's shape, with Retry-After."""
    return TooManyRequests(
        f"too many requests: {why}; retry later or without wait",
        "wait",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
