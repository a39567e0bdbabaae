"""SMTP connections kept open between messages, within per-destination connection limits.

A connection is taken from the idle list of its address when one is there (and still open),
else opened, if the destination's connection budget (shared through Redis) has a slot. After
a transaction it goes back to the idle list, until it has carried `max_messages` messages or
sat idle for `idle_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from app.core.ids import new_id
from app.delivery.mx import MXHost
from app.delivery.smtp import SmtpOptions, SmtpSession, open_session
from app.delivery.throttle import DestinationKey, DestinationThrottle

log = logging.getLogger(__name__)

RENEW_SECONDS = 5.0  # well inside the slot lease (throttle.CONNECTION_LEASE_SECONDS)
SLOT_POLL_SECONDS = 0.25  # how often a waiter re-checks for a slot freed by another process
# How long an answer to "does another process wait for this destination?" is believed:
# inside the waiter's WANTED_MILLISECONDS, so a slot it asks for is freed within this.
WANTED_CHECK_SECONDS = 0.25


class PoolObserver(Protocol):
    """Told when connections open and close and when a checkout has to wait (the metrics)."""

    def opened(self, host: MXHost) -> None:
        """A connection to `host` opened."""

    def closed(self, host: MXHost) -> None:
        """A connection to `host` closed."""

    def waited(self, host: MXHost) -> None:
        """A checkout for `host` found no idle connection and no free slot."""


class Throttled(Exception):
    """The destination's budget is used up: try these recipients again after `retry_after`."""

    def __init__(self, destination: DestinationKey, retry_after: float) -> None:
        super().__init__(f"{destination.name} is at its limit; retry in {retry_after:.1f}s")
        self.destination = destination
        self.retry_after = retry_after


class Closing(Throttled):
    """The process is shutting down: these recipients go back now, for another process to
    take at once (retry_after is 0)."""

    def __init__(self, destination: DestinationKey) -> None:
        super().__init__(destination, retry_after=0.0)
        self.args = (f"shutting down: {destination.name} handed back",)


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
        observer: PoolObserver | None = None,
    ) -> None:
        self.options = options
        self.observer = observer
        self.throttle = throttle
        self.idle_timeout = idle_timeout
        self.max_messages = max_messages
        self.slot_wait = slot_wait
        self._idle: dict[tuple[str, int], list[PooledSession]] = defaultdict(list)
        self._returned: dict[tuple[str, int], asyncio.Condition] = defaultdict(asyncio.Condition)
        self._waiters: Counter[tuple[str, int]] = Counter()
        self._asking: set[tuple[str, int]] = set()  # addresses with a waiter asking Redis
        self._live: set[PooledSession] = set()  # idle or in use; their slots are renewed
        self._wanted: dict[str, tuple[float, bool]] = {}  # destination → (until, answer)
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False
        self.opened = 0

    def start(self) -> None:
        """Begin closing sessions that sit idle too long."""
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever())

    async def checkout(self, destination: DestinationKey, host: MXHost, ip: str) -> PooledSession:
        """An open session to `ip`: an idle one, or a new one once a slot is free.

        Waiters queue in arrival order for sessions checked in by others; only one of them
        at a time asks Redis for a new slot, so a thousand waiting recipients cost one query
        per poll, not a thousand. Raises Throttled when nothing frees up within `slot_wait`,
        HostUnusable when the host cannot be reached."""
        key = (ip, self.options.port)
        deadline = time.monotonic() + self.slot_wait
        waited = False
        while True:
            if self._closing:
                raise Closing(destination)
            idle = await self._take_idle(ip)
            if idle is not None:
                return idle
            asker = key not in self._asking
            if asker:
                opened = await self._ask_for_slot(key, destination, host, ip)
                if opened is not None:
                    await self._wake_one(key)  # the budget may have room for more: next asks
                    return opened
            if not waited and self.observer is not None:
                waited = True
                self.observer.waited(host)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if asker:
                    await self._wake_one(key)  # hand the asking over
                raise Throttled(destination, retry_after=max(5.0, self.slot_wait))
            # The asker polls again soon; everyone else sleeps until a session comes back.
            await self._wait_for_return(
                key, min(remaining, SLOT_POLL_SECONDS) if asker else remaining
            )

    async def stop_lending(self) -> None:
        """Shutdown: no new transaction starts; every checkout, waiting or to come, raises
        Closing. Transactions already under way keep their sessions."""
        self._closing = True
        for condition in list(self._returned.values()):
            async with condition:
                condition.notify_all()

    async def _ask_for_slot(
        self, key: tuple[str, int], destination: DestinationKey, host: MXHost, ip: str
    ) -> PooledSession | None:
        """Open a session if the destination's budget has a slot; else signal demand."""
        self._asking.add(key)
        try:
            token = new_id()
            if await self._acquire_slot(destination, token):
                return await self._open(destination, host, ip, token)
            if self.throttle is not None:
                await self.throttle.want(destination)  # ask other processes to free a slot
            return None
        finally:
            self._asking.discard(key)

    async def _wake_one(self, key: tuple[str, int]) -> None:
        """Wake the longest-waiting checkout for `key`."""
        async with self._returned[key]:
            self._returned[key].notify()

    async def _wait_for_return(self, key: tuple[str, int], timeout: float) -> None:
        """Until a session for `key` is checked in (or closed) here, or `timeout` passes."""
        self._waiters[key] += 1
        try:
            async with self._returned[key]:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._returned[key].wait(), timeout)
        finally:
            self._waiters[key] -= 1

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
        if self.observer is not None:
            self.observer.opened(host)
        pooled = PooledSession(session, destination, token)
        self._live.add(pooled)
        return pooled

    async def checkin(self, pooled: PooledSession, *, reusable: bool) -> None:
        """Return a session after a transaction; it is closed when it should not be reused."""
        pooled.messages += 1
        key = (pooled.session.ip, self.options.port)
        keep = reusable and pooled.session.is_connected and pooled.messages < self.max_messages
        if keep and not self._waiters[key]:
            # Nobody here needs it: if another process is waiting for a slot, free ours.
            keep = not await self._wanted_elsewhere(pooled.destination)
        if not keep:
            await self._discard(pooled)
        else:
            # Its slot is renewed with every other by the upkeep loop (renew_slots), not here:
            # a round trip per message would cost more than the message's own work.
            pooled.idle_since = time.monotonic()
            self._idle[key].append(pooled)
        await self._wake_one(key)

    async def _wanted_elsewhere(self, destination: DestinationKey) -> bool:
        """Whether another process waits for a slot of `destination`; asked of Redis at
        most once per WANTED_CHECK_SECONDS per destination, not once per message."""
        if self.throttle is None:
            return False
        now = time.monotonic()
        checked = self._wanted.get(destination.name)
        if checked is None or checked[0] < now:
            checked = (now + WANTED_CHECK_SECONDS, await self.throttle.wanted(destination))
            self._wanted[destination.name] = checked
        return checked[1]

    async def _discard(self, pooled: PooledSession) -> None:
        """Close a session and free its slot."""
        self._live.discard(pooled)
        if self.observer is not None:
            self.observer.closed(pooled.session.host)
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

    async def renew_slots(self) -> None:
        """Keep the slots of every open connection (a crashed process's slots lapse)."""
        if self.throttle is not None:
            await self.throttle.renew_connections([(s.destination, s.token) for s in self._live])

    async def _reap_forever(self) -> None:
        interval = min(RENEW_SECONDS, max(0.5, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
                await self.renew_slots()
            except Exception:  # Redis trouble must not stop the upkeep for good
                log.exception("connection pool upkeep failed")

    async def close(self) -> None:
        """Stop the reaper, close every idle session (QUIT, RFC 5321 §4.1.1.10) and drop any
        still checked out: their transactions were aborted, a QUIT would not be read."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        sessions = [s for idle in self._idle.values() for s in idle]
        self._idle.clear()
        for pooled in self._live.difference(sessions):
            pooled.session.abort()
        # Side by side: a stopping worker need not wait for each server's 221 in turn.
        await asyncio.gather(*(self._discard(pooled) for pooled in list(self._live)))
