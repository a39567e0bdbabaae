"""What a reply means for a recipient: delivered, bounced, deferred until when, or expired."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.delivery.replies import Reply, synthetic

# "try again in 300 seconds", "retry after 5 minutes", "please try again in 1 hour" …
_HINT = re.compile(
    r"(?:try|retry)(?:\s+again)?\s+(?:in|after)\s+(\d+)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_HINT_UNITS = {"s": 1, "m": 60, "h": 3600}
MIN_HINT = timedelta(seconds=30)  # a hint never makes us hammer a server


def retry_hint(reply: Reply) -> timedelta | None:
    """The wait a server asked for in its reply text, if it named one."""
    match = _HINT.search(reply.text)
    if match is None:
        return None
    amount, unit = int(match.group(1)), match.group(2)[0].lower()
    return timedelta(seconds=amount * _HINT_UNITS[unit])


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Waits between attempts (the last repeats) and how long to keep trying."""

    schedule: Sequence[timedelta]
    max_age: timedelta
    jitter: float = 0.1  # ±10%: spread retries so a deferred batch does not return at once

    def delay(self, attempts_made: int, rng: random.Random | None = None) -> timedelta:
        """The wait after the `attempts_made`-th failed attempt."""
        base = self.schedule[min(max(attempts_made, 1), len(self.schedule)) - 1]
        factor = 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return base * factor


@dataclass(frozen=True, slots=True)
class Decision:
    """The recipient's next state after an attempt."""

    status: str  # a RecipientStatus value
    reply: Reply
    next_attempt_at: datetime | None = None


def decide(
    reply: Reply,
    *,
    attempts_made: int,
    accepted_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """Map one attempt's reply to the recipient's next state."""
    if reply.is_success:
        return Decision("delivered", reply)
    if reply.is_permanent:
        return Decision("bounced", reply)
    deadline = accepted_at + policy.max_age
    if now >= deadline:
        # RFC 5321 §4.5.4.1: give up after the maximum age, reporting 4.4.7.
        expired = synthetic(
            reply.code, "4.4.7", f"message expired after {policy.max_age}; last reply: {reply}"
        )
        return Decision("expired", expired)
    wait = policy.delay(attempts_made, rng)
    hint = retry_hint(reply)
    if hint is not None:
        # Honour the server's own schedule, within sane bounds.
        wait = min(max(hint, MIN_HINT), max(policy.schedule))
    return Decision("deferred", reply, min(now + wait, deadline))
