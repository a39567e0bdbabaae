"""Delivering the outbox: per endpoint, one batch at a time, signed, retried with backoff.

An endpoint is leased by one dispatcher at a time, so at most one batch is in flight per
endpoint and events arrive in outbox order. A batch is fixed when first made (up to 100
events) and its id is the `webhook-id` of every retry. Failures back off exponentially for
up to WEBHOOK_RETRY_PERIOD; a 410 Gone, or WEBHOOK_DISABLE_AFTER_FAILURES failures in a row,
disables the endpoint and records a `webhook_disabled` event. Nothing is lost when a worker
dies: the outbox, the batch and its retry time live in the database and the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.core.ids import new_id
from app.delivery.resolver import make_resolver
from app.events import service as events
from app.events.models import Event, EventType
from app.messages.models import Message, Recipient
from app.webhooks import payloads, service
from app.webhooks.client import PostResult, WebhookClient
from app.webhooks.models import (
    BatchState,
    PayloadFormat,
    Webhook,
    WebhookAttempt,
    WebhookBatch,
    WebhookOutbox,
)
from app.webhooks.payloads import EventContext
from app.webhooks.signing import signature_headers

log = logging.getLogger(__name__)

DRAIN_BUDGET_SECONDS = 10.0  # one endpoint's turn: then the lease is released for the next run
JITTER = 0.1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff between attempts of a batch, and when to give up on it."""

    first: timedelta
    ceiling: timedelta
    period: timedelta
    disable_after: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy the settings describe."""
        return cls(
            first=settings.webhook_retry_min,
            ceiling=settings.webhook_retry_max_interval,
            period=settings.webhook_retry_period,
            disable_after=settings.webhook_disable_after_failures,
        )

    def delay(self, attempts_made: int) -> timedelta:
        """first × 2^(n-1), capped at the ceiling, ±10% jitter so retries spread out."""
        exponent = min(max(attempts_made - 1, 0), 32)
        base: timedelta = min(self.first * (2**exponent), self.ceiling)
        factor = 1 + random.uniform(-JITTER, JITTER)
        return base * factor


@dataclass(frozen=True, slots=True)
class Sent:
    """What one batch attempt did."""

    succeeded: bool
    events: int


class Dispatcher:
    """Delivers due webhook batches; one per worker process."""

    def __init__(self, settings: Settings, db: Database, client: WebhookClient) -> None:
        """Keep the settings, database and HTTP client."""
        self.settings = settings
        self.db = db
        self.client = client
        self.policy = RetryPolicy.from_settings(settings)
        self.secret_key = settings.secret_key_bytes()
        self.lease = settings.webhook_timeout * 2 + timedelta(seconds=DRAIN_BUDGET_SECONDS + 30)

    async def run(self, *, budget: float = DRAIN_BUDGET_SECONDS) -> int:
        """Deliver for every endpoint with due work, a few at a time; returns events sent."""
        async with self.db.session() as session:
            due = await due_endpoints(session)
        if not due:
            return 0
        limit = asyncio.Semaphore(self.settings.webhook_concurrency)
        deadline = time.monotonic() + budget

        async def one(webhook_id: str) -> int:
            """Drain one endpoint, a bounded number at a time."""
            async with limit:
                return await self.drain(webhook_id, deadline=deadline)

        return sum(await asyncio.gather(*(one(webhook_id) for webhook_id in due)))

    async def drain(self, webhook_id: str, *, deadline: float) -> int:
        """Send the endpoint's batches one after another until none is due, one fails, or
        the deadline passes."""
        token = await self._claim(webhook_id)
        if token is None:
            return 0
        delivered = 0
        try:
            while time.monotonic() < deadline:
                sent = await self.send_next(webhook_id, token)
                if sent is None or not sent.succeeded:
                    break
                delivered += sent.events
        finally:
            await self._release(webhook_id, token)
        return delivered

    async def _claim(self, webhook_id: str) -> str | None:
        """Lease the endpoint; None when it is disabled or another dispatcher holds it."""
        token, now = new_id(), clock.now()
        async with self.db.session() as session:
            result = await session.execute(
                update(Webhook)
                .where(
                    Webhook.id == webhook_id,
                    Webhook.enabled.is_(True),
                    or_(Webhook.lease_expires_at.is_(None), Webhook.lease_expires_at < now),
                )
                .values(lease_token=token, lease_expires_at=now + self.lease)
                .returning(Webhook.id)
                .execution_options(synchronize_session=False)
            )
            claimed = result.scalar_one_or_none()
            await session.commit()
        return token if claimed else None

    async def _release(self, webhook_id: str, token: str) -> None:
        """Give the endpoint's lease back (if it is still ours)."""
        async with self.db.session() as session:
            await session.execute(
                update(Webhook)
                .where(Webhook.id == webhook_id, Webhook.lease_token == token)
                .values(lease_token=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            await session.commit()

    async def send_next(self, webhook_id: str, token: str) -> Sent | None:
        """POST the endpoint's due batch (making one from the outbox if there is none)."""
        async with self.db.session() as session:
            webhook = await session.get(Webhook, webhook_id)
            if webhook is None or not webhook.enabled or webhook.lease_token != token:
                return None
            batch = await _due_batch(session, webhook, self.settings.webhook_batch_size)
            if batch is None:
                await session.commit()
                return None
            contexts = await batch_events(session, batch.id)
            await session.commit()
        sent_at = clock.now()
        try:
            secrets_in_use = service.secrets_in_use(webhook, secret_key=self.secret_key)
            signed = _signed_body(webhook.format, contexts, secrets_in_use, batch.id, sent_at)
        except Exception as exc:  # a failed attempt like any other: recorded, backed off
            log.warning("webhook %s: batch %s not built", webhook_id, batch.id, exc_info=True)
            result = PostResult(None, f"request not built: {type(exc).__name__}", None, 0)
        else:
            # A batch with nothing in the endpoint's format counts as sent.
            nothing = PostResult(204, None, None, 0)
            result = nothing if signed is None else await self.client.post(webhook.url, *signed)
        await self._record(webhook_id, token, batch.id, result, sent_at, len(contexts))
        return Sent(result.succeeded, len(contexts))

    async def _record(
        self,
        webhook_id: str,
        token: str,
        batch_id: str,
        result: PostResult,
        sent_at: datetime,
        event_count: int,
    ) -> None:
        """The attempt, the batch's new state and the endpoint's health, fenced by the lease."""
        async with self.db.session() as session:
            # FOR NO KEY UPDATE, not FOR UPDATE: disabling an endpoint writes outbox rows for
            # the account's other endpoints, whose foreign keys take KEY SHARE locks on them;
            # FOR UPDATE would conflict with those, so two endpoints of one account disabled
            # at once deadlocked on PostgreSQL.
            webhook = await session.get(Webhook, webhook_id, with_for_update={"key_share": True})
            batch = await session.get(WebhookBatch, batch_id)
            if webhook is None or batch is None or webhook.lease_token != token:
                return  # the lease was lost; whoever holds it now records its own attempt
            batch.attempt_count += 1
            session.add(
                WebhookAttempt(
                    webhook_id=webhook_id,
                    batch_id=batch_id,
                    attempt=batch.attempt_count,
                    attempted_at=sent_at,
                    duration_ms=result.duration_ms,
                    succeeded=result.succeeded,
                    response_status=result.status,
                    error=result.error,
                    ip=result.ip,
                    event_count=event_count,
                )
            )
            if result.succeeded:
                _succeeded(webhook, batch)
            else:
                await self._failed(session, webhook, batch, result)
            await session.commit()

    async def _failed(
        self, session: AsyncSession, webhook: Webhook, batch: WebhookBatch, result: PostResult
    ) -> None:
        """Back off, give the batch up after the retry period, disable the endpoint when due."""
        now = clock.now()
        webhook.consecutive_failures += 1
        webhook.updated_at = now
        if now - batch.created_at >= self.policy.period:
            batch.state = BatchState.FAILED
            batch.completed_at = now
        else:
            batch.next_attempt_at = now + self.policy.delay(batch.attempt_count)
        reason = None
        if result.status == 410:
            reason = "the endpoint answered 410 Gone"
        elif webhook.consecutive_failures >= self.policy.disable_after:
            reason = f"{webhook.consecutive_failures} deliveries in a row failed"
        if reason is not None:
            await disable(session, webhook, reason=reason, last_error=result.error)


def _succeeded(webhook: Webhook, batch: WebhookBatch) -> None:
    """The batch is delivered; the endpoint's failure run ends."""
    now = clock.now()
    batch.state = BatchState.DELIVERED
    batch.completed_at = now
    webhook.consecutive_failures = 0
    webhook.updated_at = now


async def disable(
    session: AsyncSession, webhook: Webhook, *, reason: str, last_error: str | None = None
) -> None:
    """Stop sending to the endpoint and record a `webhook_disabled` event saying why."""
    now = clock.now()
    webhook.enabled = False
    reason_logged = reason
    if last_error is not None:
        reason = f"{reason} (last: {last_error})"
    webhook.disabled_reason = reason
    webhook.disabled_at = now
    await session.flush()
    # Not the last error: the endpoint's answer is the account's business, not the log's.
    log.warning("webhook %s disabled: %s", webhook.id, reason_logged)
    await events.record(
        session,
        [
            events.NewEvent(
                account_id=webhook.account_id,
                type=EventType.WEBHOOK_DISABLED,
                data={"webhook_id": webhook.id, "url": webhook.url, "reason": reason},
            )
        ],
    )


def _signed_body(
    payload_format: str,
    contexts: list[EventContext],
    secrets_in_use: list[str],
    batch_id: str,
    sent_at: datetime,
) -> tuple[bytes, dict[str, str]] | None:
    """The body in the endpoint's format and its signature headers (None: nothing to send)."""
    body = _body(payload_format, contexts, sent_at)
    if body is None:
        return None
    headers = signature_headers(secrets_in_use, message_id=batch_id, timestamp=sent_at, body=body)
    return body.encode(), headers


def _body(payload_format: str, contexts: list[EventContext], sent_at: datetime) -> str | None:
    """The body in the endpoint's format (None: nothing to send in it)."""
    if payload_format == PayloadFormat.SENDGRID:
        return payloads.sendgrid_body(contexts)
    return payloads.standard_body(contexts, timestamp=sent_at)


async def due_endpoints(session: AsyncSession) -> list[str]:
    """Enabled endpoints with a batch due for a retry or events not yet batched."""
    now = clock.now()
    retries = select(WebhookBatch.webhook_id).where(
        WebhookBatch.state == BatchState.PENDING, WebhookBatch.next_attempt_at <= now
    )
    fresh = select(WebhookOutbox.webhook_id).where(WebhookOutbox.batch_id.is_(None))
    candidates = retries.union(fresh).subquery()
    query = select(Webhook.id).where(
        Webhook.id.in_(select(candidates.c.webhook_id)),
        Webhook.enabled.is_(True),
        or_(Webhook.lease_expires_at.is_(None), Webhook.lease_expires_at < now),
    )
    return list((await session.execute(query)).scalars())


async def _due_batch(session: AsyncSession, webhook: Webhook, size: int) -> WebhookBatch | None:
    """The endpoint's pending batch if due; else a new one from the oldest outbox rows."""
    pending = (
        await session.execute(
            select(WebhookBatch).where(
                WebhookBatch.webhook_id == webhook.id, WebhookBatch.state == BatchState.PENDING
            )
        )
    ).scalar_one_or_none()
    if pending is not None:
        return pending if pending.next_attempt_at <= clock.now() else None
    rows = list(
        (
            await session.execute(
                select(WebhookOutbox.id)
                .where(WebhookOutbox.webhook_id == webhook.id, WebhookOutbox.batch_id.is_(None))
                .order_by(WebhookOutbox.id)
                .limit(size)
            )
        ).scalars()
    )
    if not rows:
        return None
    now = clock.now()
    batch = WebhookBatch(
        id="msg_" + new_id(),
        webhook_id=webhook.id,
        account_id=webhook.account_id,
        event_count=len(rows),
        next_attempt_at=now,
        created_at=now,
    )
    session.add(batch)
    await session.flush()
    await session.execute(
        update(WebhookOutbox)
        .where(WebhookOutbox.id.in_(rows))
        .values(batch_id=batch.id)
        .execution_options(synchronize_session=False)
    )
    return batch


async def batch_events(session: AsyncSession, batch_id: str) -> list[EventContext]:
    """The batch's events in outbox order, with their message's fields."""
    query = (  # columns, not ORM objects: this runs for every batch
        select(
            Event.id,
            Event.type,
            Event.created_at,
            Event.data,
            Event.message_id,
            Event.recipient_id,
            Message.message_id_header,
            Message.categories,
            Message.custom_args,
            Recipient.email,
        )
        .join(WebhookOutbox, WebhookOutbox.event_id == Event.id)
        .outerjoin(Message, Message.id == Event.message_id)
        .outerjoin(Recipient, Recipient.id == Event.recipient_id)
        .where(WebhookOutbox.batch_id == batch_id)
        .order_by(WebhookOutbox.id)
    )
    return [
        EventContext(
            id=row.id,
            type=row.type,
            created_at=row.created_at,
            data=row.data,
            message_id=row.message_id,
            recipient_id=row.recipient_id,
            smtp_id=row.message_id_header,
            categories=tuple(row.categories or ()),
            custom_args=dict(row.custom_args or {}),
            email=row.email or row.data.get("email"),
        )
        for row in await session.execute(query)
    ]


def build_dispatcher(settings: Settings, db: Database) -> Dispatcher:
    """A dispatcher with its own HTTP client and DNS resolver."""
    resolver = make_resolver(settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds())
    client = WebhookClient(
        resolver,
        timeout=settings.webhook_timeout.total_seconds(),
        allow_private=settings.allow_private_destinations,
    )
    return Dispatcher(settings, db, client)
