"""Warnings about a failure that repeats on every request (Redis away), logged at most once
per interval with a count of those held back: an outage must be visible in the log without
turning every request into a line of it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

DEFAULT_EVERY = 30.0


class ThrottledWarning:
    """One logger's warning about one kind of failure, at most once per `every` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        every: float = DEFAULT_EVERY,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._every = every
        self._now = now
        self._next_at = float("-inf")
        self._held_back = 0

    def warning(self, message: str, *args: object) -> None:
        """Log now, or count it when one was logged less than `every` seconds ago; the next
        line says how many were held back meanwhile."""
        now = self._now()
        if now < self._next_at:
            self._held_back += 1
            return
        held_back, self._held_back = self._held_back, 0
        self._next_at = now + self._every
        if held_back:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, held_back, self._every)
        self._logger.warning(message, *args)
