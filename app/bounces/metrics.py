"""Prometheus counters of `columba inbound`: every message by outcome, and the failures."""

from __future__ import annotations

from prometheus_client import Counter

from app.bounces.intake import Outcome

RECEIVED = Counter(
    "columba_inbound_messages",
    "Messages the inbound listener stored, by what was concluded.",
    ["outcome", "bounce_type"],
)
FAILURES = Counter(
    "columba_inbound_store_failures",
    "Messages answered 451 because they could not be stored.",
)


def count(outcome: Outcome, bounce_type: str | None) -> None:
    """One more stored message."""
    RECEIVED.labels(outcome=outcome.value, bounce_type=bounce_type or "").inc()


def prime() -> None:
    """Every outcome at zero, so a dashboard sees the series before the first message."""
    for outcome in Outcome:
        RECEIVED.labels(outcome=outcome.value, bounce_type="")
