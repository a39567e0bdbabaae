"""Prometheus counters of `columba inbound` (defined with the others in
app/observability/metrics.py): every message by outcome, and the failures."""

from __future__ import annotations

from app.bounces.intake import Outcome
from app.observability.metrics import INBOUND_MESSAGES as RECEIVED
from app.observability.metrics import INBOUND_STORE_FAILURES as FAILURES

__all__ = ["FAILURES", "RECEIVED", "count", "prime"]


def count(outcome: Outcome, bounce_type: str | None) -> None:
    """One more stored message."""
    RECEIVED.labels(outcome=outcome.value, bounce_type=bounce_type or "").inc()


def prime() -> None:
    """Every outcome at zero, so a dashboard sees the series before the first message."""
    for outcome in Outcome:
        RECEIVED.labels(outcome=outcome.value, bounce_type="")
