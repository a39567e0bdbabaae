"""SMTP connections kept open between messages, within per-destination connection limits.

A connection is taken from the idle list of its address when one is there (and still open),
else opened, if the destination's connection budget (shared through Redis) has a slot. After
a transaction it goes back to the idle list, until it has carried `max_messages` messages or
sat idle for `idle_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

from app.delivery.mx import MXHost
from app.delivery.smtp import SmtpOptions, SmtpSession, open_session
from app.delivery.throttle import DestinationKey, DestinationThrottle
from app.ids import new_id

SLOT_POLL_SECONDS = 0.05


class Throttled(Exception):
    """The destination's budget is used up: try these recipients again after `retry_after`."""

    def __init__(self, destination: DestinationKey, retry_after: float) -> None:
        super().__init__(f"{destination.name} is at its limit; retry in {retry_after:.1f}s")
        self.destination = destination
        self.retry_after = retry_after


@dataclass(eq=False)
class PooledSession:
    """A session with the bookkeeping the pool needs."""

    session: SmtpSession
    destination: DestinationKey
    token: str
    messages: int = 0
    reused: bool = False
    idle_since: float = field(default_factory=time.monotonic)


class ConnectionPool:
    """Idle sessions per (address, port); new ones only within the destination's budget."""

    def __init__(
        self,
        options: SmtpOptions,
        *,
        throttle: DestinationThrottle | None,
        idle_timeout: float = 30.0,
        max_messages: int = 100,
        slot_wait: float = 2.0,
    ) -> None:
        self.options = options
        self.throttle = throttle
        self.idle_timeout = idle_timeout
        self.max_messages = max_messages
        self.slot_wait = slot_wait
        self._idle: dict[tuple[str, int], list[PooledSession]] = defaultdict(list)
        self._reaper: asyncio.Task[None] | None = None
        self.opened = 0

    def start(self) -> None:
        """Begin closing sessions that sit idle too long."""
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever())

    async def checkout(self, destination: DestinationKey, host: MXHost, ip: str) -> PooledSession:
        """An open session to `ip`: an idle one, or a new one once a slot is free.

        Raises Throttled when no slot frees up within `slot_wait`, HostUnusable when the
        host cannot be reached."""
        deadline = time.monotonic() + self.slot_wait
        while True:
            idle = await self._take_idle(ip)
            if idle is not None:
                return idle
            token = new_id()
            if await self._acquire_slot(destination, token):
                return await self._open(destination, host, ip, token)
            if time.monotonic() >= deadline:
                raise Throttled(destination, retry_after=max(5.0, self.slot_wait))
            await asyncio.sleep(SLOT_POLL_SECONDS)

    async def _take_idle(self, ip: str) -> PooledSession | None:
        """The most recently used idle session to `ip` that is still open."""
        idle = self._idle.get((ip, self.options.port), [])
        while idle:
            pooled = idle.pop()
            if pooled.session.is_connected:
                pooled.reused = True
                return pooled
            await self._discard(pooled)
        return None

    async def _acquire_slot(self, destination: DestinationKey, token: str) -> bool:
        if self.throttle is None:
            return True
        return await self.throttle.acquire_connection(destination, token)

    async def _open(
        self, destination: DestinationKey, host: MXHost, ip: str, token: str
    ) -> PooledSession:
        try:
            session = await open_session(host, ip, self.options)
        except BaseException:
            if self.throttle is not None:
                await self.throttle.release_connection(destination, token)
            raise
        self.opened += 1
        return PooledSession(session, destination, token)

    async def checkin(self, pooled: PooledSession, *, reusable: bool) -> None:
        """Return a session after a transaction; it is closed when it should not be reused."""
        pooled.messages += 1
        keep = reusable and pooled.session.is_connected and pooled.messages < self.max_messages
        if not keep:
            await self._discard(pooled)
            return
        pooled.idle_since = time.monotonic()
        self._idle[(pooled.session.ip, self.options.port)].append(pooled)
        if self.throttle is not None:
            await self.throttle.renew_connection(pooled.destination, pooled.token)

    async def _discard(self, pooled: PooledSession) -> None:
        """Close a session and free its slot."""
        await pooled.session.close()
        if self.throttle is not None:
            await self.throttle.release_connection(pooled.destination, pooled.token)

    async def reap(self) -> int:
        """Close sessions idle for longer than `idle_timeout`; returns how many."""
        cutoff = time.monotonic() - self.idle_timeout
        expired: list[PooledSession] = []
        for sessions in self._idle.values():
            expired.extend(s for s in sessions if s.idle_since < cutoff)
            sessions[:] = [s for s in sessions if s.idle_since >= cutoff]
        for pooled in expired:
            await self._discard(pooled)
        return len(expired)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.idle_timeout / 4))
            await self.reap()

    async def close(self) -> None:
        """Stop the reaper and close every idle session."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        sessions = [s for idle in self._idle.values() for s in idle]
        self._idle.clear()
        for pooled in sessions:
            await self._discard(pooled)
