"""How Columba's SMTP listeners (`columba smtp`, `columba inbound`) stop on SIGTERM.

RFC 5321 §3.8: a server that must shut down answers 421 and closes the channel; the client
keeps the message and tries again later (RFC 3463 X.3.2, "system not accepting network
messages"). So from the signal on, a new session is greeted with 421 at once, while the
sessions already open get the grace period (COLUMBA_SHUTDOWN_GRACE) to finish on their own.
After it, each is answered 421 and closed: an idle one at once, one in the middle of a
command (a message being stored) as soon as that command has had its reply, so that a
message committed is always answered 250 before the channel closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP

log = logging.getLogger(__name__)

SHUTTING_DOWN = "421 4.3.2 Service shutting down, closing transmission channel"
FINAL_SECONDS = 5.0  # after the grace period, how long sessions get to take their 421 and go

Command = Callable[[str], Awaitable[None]]


async def until_signalled() -> None:
    """Until SIGTERM or SIGINT; from then on a second one ends the process at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _exit_at_once)


def _exit_at_once() -> None:
    """A second signal: no more waiting for anyone."""
    log.warning("second signal: exiting at once")
    os._exit(1)


class ListenerShutdown:
    """The open sessions of one listener process, and its way of stopping."""

    def __init__(self) -> None:
        self.sessions: set[GracefulSMTP] = set()
        self.stopping = False  # new sessions are refused with 421
        self.closing = False  # open sessions are answered 421 and closed
        self._none_open = asyncio.Event()
        self._none_open.set()

    def opened(self, session: GracefulSMTP) -> None:
        """A session began."""
        self.sessions.add(session)
        self._none_open.clear()

    def ended(self, session: GracefulSMTP) -> None:
        """A session is over."""
        self.sessions.discard(session)
        if not self.sessions:
            self._none_open.set()

    async def run(self, grace: float) -> None:
        """Refuse new sessions, wait up to `grace` seconds for the open ones to end, then
        close those still open (each after its current command) with 421."""
        self.stopping = True
        if self.sessions:
            log.info("waiting up to %.0fs for %d open session(s)", grace, len(self.sessions))
        await self._until_no_sessions(grace)
        self.closing = True
        for session in list(self.sessions):
            if not session.busy:
                await session.say_shutting_down()
        await self._until_no_sessions(FINAL_SECONDS)
        for session in list(self.sessions):  # still in a command: a client stuck mid-DATA
            session.abort()

    async def _until_no_sessions(self, timeout: float) -> None:
        """Until every session has ended, or `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._none_open.wait(), timeout)


class GracefulSMTP(SMTP):
    """An aiosmtpd session that takes part in its listener's shutdown."""

    def __init__(self, handler: Any, *, shutdown: ListenerShutdown, **options: Any) -> None:
        super().__init__(handler, **options)
        self.shutdown = shutdown
        self.busy = False  # inside a command: its reply is still to come
        self._smtp_methods = {name: self._guarded(m) for name, m in self._smtp_methods.items()}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the session (called again after STARTTLS, which is not a new session)."""
        super().connection_made(transport)
        self.shutdown.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        """The session is over."""
        super().connection_lost(error)
        self.shutdown.ended(self)

    async def _handle_client(self) -> None:
        """A session opened while the listener stops is answered 421 and closed."""
        if self.shutdown.stopping:
            await self.say_shutting_down()
            return
        await super()._handle_client()

    def _guarded(self, command: Command) -> Command:
        """The command, answered 421 instead once the listener is closing sessions, and
        followed by 421 when closing began while it ran."""

        @functools.wraps(command)  # keeps aiosmtpd's @syntax attributes (HELP reads them)
        async def run(arg: str) -> None:
            if self.shutdown.closing:
                await self.say_shutting_down()
                return
            self.busy = True
            try:
                await command(arg)
            finally:
                self.busy = False
            if self.shutdown.closing and self.transport is not None:
                await self.say_shutting_down()

        return run

    async def say_shutting_down(self) -> None:
        """421 (RFC 5321 §3.8), then close the channel."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.push(SHUTTING_DOWN)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close the channel without a word (a client that would not finish its command)."""
        if isinstance(self.transport, asyncio.Transport):
            self.transport.abort()
        elif self.transport is not None:
            self.transport.close()
