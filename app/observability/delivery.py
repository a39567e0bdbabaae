"""Delivery metrics and log lines, from one recorded batch of outcomes at a time."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter as PromCounter

from app.delivery.classify import classify
from app.delivery.mx import MXHost
from app.delivery.signing import DkimSigner
from app.messages.dispatch import Outcome
from app.messages.models import RecipientStatus
from app.observability import metrics
from app.observability.providers import provider_of

log = logging.getLogger("columba.delivery")


def observe_outcomes(outcomes: Sequence[Outcome], *, now: datetime) -> None:
    """Count a committed batch: one increment per distinct label set, not per recipient."""
    final: Counter[str] = Counter()
    replies: Counter[str] = Counter()
    deferrals: Counter[tuple[str, str]] = Counter()
    bounces: Counter[tuple[str, str, str]] = Counter()
    for outcome in outcomes:
        status = RecipientStatus(outcome.decision.status)
        if status.is_final:
            final[status.value] += 1
        if outcome.mx_host is not None:  # a reply some server gave, not one we made up
            replies[f"{outcome.decision.reply.code // 100}xx"] += 1
        if status is RecipientStatus.DELIVERED and outcome.accepted_at is not None:
            metrics.DELIVERY_LATENCY.observe((now - outcome.accepted_at).total_seconds())
        elif status in (RecipientStatus.DEFERRED, RecipientStatus.BOUNCED):
            verdict = classify(outcome.decision.reply)
            provider = provider_of(outcome.recipient.domain, outcome.mx_host)
            if status is RecipientStatus.DEFERRED:
                deferrals[(verdict.bucket.value, provider)] += 1
            else:
                bounces[(verdict.kind.value, verdict.bucket.value, provider)] += 1
    _add(metrics.RECIPIENTS_FINAL, final)
    _add(metrics.SMTP_REPLIES, replies)
    _add(metrics.DEFERRALS, deferrals)
    _add(metrics.BOUNCES, bounces)


def _add(counter: PromCounter, counts: Mapping[Any, int]) -> None:
    """Increment `counter` once per label set."""
    for labels, amount in counts.items():
        values = labels if isinstance(labels, tuple) else (labels,)
        counter.labels(*values).inc(amount)


def log_attempts(outcomes: Sequence[Outcome], *, level: int = logging.INFO) -> None:
    """One line per delivery attempt, at `level` (INFO with COLUMBA_LOG_FORMAT=json, DEBUG
    for text: a line per recipient of a bulk send is for log pipelines, not terminals)."""
    if not log.isEnabledFor(level):
        return
    for outcome in outcomes:
        reply = outcome.decision.reply
        recipient = outcome.recipient
        log.log(
            level,
            "delivery attempt %s: %s",
            outcome.decision.status,
            reply,
            extra={
                "event": "delivery_attempt",
                "message_id": recipient.message_id,
                "recipient_id": recipient.id,
                "recipient": recipient.email,
                "account_id": recipient.account_id,
                "destination": recipient.domain,
                "mx": outcome.mx_host,
                "ip": outcome.ip,
                "tls": outcome.tls_version,
                "status": outcome.decision.status,
                "reply_code": reply.code,
                "reply_enhanced": reply.enhanced,
                "reply": reply.text,
                "duration_ms": outcome.duration_ms,
                "request_id": outcome.request_id,
            },
        )


class PoolMetrics:
    """The connection pool's observer: open connections and slot waits by provider."""

    def opened(self, host: MXHost) -> None:
        """One more open connection."""
        metrics.SMTP_CONNECTIONS.labels(provider_of("", host.name)).inc()

    def closed(self, host: MXHost) -> None:
        """One fewer open connection."""
        metrics.SMTP_CONNECTIONS.labels(provider_of("", host.name)).dec()

    def waited(self, host: MXHost) -> None:
        """A checkout had to wait for a slot."""
        metrics.THROTTLE_WAITS.labels(provider_of("", host.name)).inc()


class TimedSigner:
    """A DKIM signer whose signing time is observed."""

    def __init__(self, signer: DkimSigner) -> None:
        self.signer = signer

    def sign(self, data: bytes, *, timestamp: int) -> bytes:
        """The signer's signature; its duration goes to columba_dkim_signing_seconds."""
        began = time.perf_counter()
        try:
            return self.signer.sign(data, timestamp=timestamp)
        finally:
            metrics.DKIM_SIGNING.observe(time.perf_counter() - began)
