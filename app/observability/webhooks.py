"""Webhook delivery metrics and log lines: one per POST of a batch."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from app.observability import metrics
from app.webhooks.client import PostResult
from app.webhooks.ledger import Batch

log = logging.getLogger("columba.webhooks")


def outcome_of(result: PostResult) -> str:
    """success (2xx), client_error (4xx), server_error (5xx, and 1xx/3xx: not followed) or
    error (no response: refused, timed out, …)."""
    if result.status is None:
        return "error"
    if result.succeeded:
        return "success"
    return "client_error" if 400 <= result.status < 500 else "server_error"


def observe_webhook_post(webhook_id: str, url: str, batch: Batch, result: PostResult) -> None:
    """Count the POST and log it: the endpoint's host only (its path and query may hold a
    token of the customer's)."""
    outcome = outcome_of(result)
    metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
    log.log(
        logging.INFO if outcome == "success" else logging.WARNING,
        "webhook %s batch %s to %s: %s",
        webhook_id,
        batch.id,
        urlsplit(url).hostname,
        result.status or result.error,
        extra={
            "event": "webhook_delivery",
            "webhook_id": webhook_id,
            "batch_id": batch.id,
            "host": urlsplit(url).hostname,
            "events": len(batch.events),
            "attempt": batch.attempts_made + 1,
            "outcome": outcome,
            "http_status": result.status,
            "error": result.error,
            "duration_ms": result.duration_ms,
        },
    )
