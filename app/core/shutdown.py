"""Telling the API that its uvicorn server was asked to stop.

On SIGTERM or SIGINT uvicorn stops accepting connections and waits, up to
timeout_graceful_shutdown (COLUMBA_SHUTDOWN_GRACE), for the requests in flight; the app
hears of it only at the lifespan shutdown, after they have all ended. A long poll
(`GET /v1/events?wait=`) would hold that wait for as long as it was asked to wait, so the
app puts a handler of its own in front of uvicorn's, to be told at once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_server_exit(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` in the running loop as soon as uvicorn is signalled to stop; returns
    what undoes this. Does nothing where uvicorn does not handle the signals itself (a
    server serving in a thread, or one the tests run in-process)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[signal.Signals, Any] = {}
    for signum in SIGNALS:
        previous = signal.getsignal(signum)
        if not isinstance(getattr(previous, "__self__", None), uvicorn.Server):
            continue

        def handler(sig: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(callback)  # safe from a signal handler
            previous(sig, frame)

        signal.signal(signum, handler)
        installed[signum] = previous

    def undo() -> None:
        for signum, previous in installed.items():
            signal.signal(signum, previous)

    return undo
