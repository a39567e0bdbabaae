"""Delivering the outbox: per endpoint, one batch at a time, signed, retried with backoff.

An endpoint is leased by one dispatcher at a time, so at most one batch is in flight per
endpoint and events arrive in outbox order. A batch is fixed when first made (up to 100
events) and its id is the `webhook-id` of every retry. While a batch is in flight, one
transaction (app.webhooks.ledger) records the batch before it and takes the batch after it,
which is sent only once the one in flight succeeded: a failed batch keeps the batches taken
behind it waiting. Failures back off exponentially for up to WEBHOOK_RETRY_PERIOD; a 410 Gone,
or WEBHOOK_DISABLE_AFTER_FAILURES failures in a row, disables the endpoint and records a
`webhook_disabled` event. Nothing is lost when a worker dies: the outbox, the batches and
their retry times live in the database and the lease expires; a delivered batch whose record
was lost is sent again (at least once), with the same webhook-id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.config import Settings
from app.core.db import Database, lock_row
from app.core.ids import new_id
from app.delivery.resolver import make_resolver
from app.events import service as events
from app.events.models import EventType
from app.observability.webhooks import observe_webhook_post
from app.webhooks import ledger, payloads, service
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
from app.webhooks.signing import sendgrid_headers, signature_headers

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
class Endpoint:
    """What the dispatcher needs of a leased endpoint; read again when its settings change."""

    id: str
    token: str  # the lease's fencing token
    url: str
    format: str
    secret: bytes
    previous_secret: bytes | None
    previous_secret_expires_at: datetime | None
    signing_key: bytes | None  # SendGrid's ECDSA key (sealed) when the endpoint is signed
    stamp: datetime  # updated_at when read


@dataclass(frozen=True, slots=True)
class Built:
    """A batch's request, signed, or why there is none to send."""

    sent_at: datetime
    signed: tuple[bytes, dict[str, str]] | None
    result: PostResult | None  # when there is nothing to send: the attempt's outcome


@dataclass(frozen=True, slots=True)
class Outcome:
    """One POST of a batch: when it was made and what came of it."""

    sent_at: datetime
    result: PostResult


ENDPOINT_COLUMNS = (
    Webhook.id,
    Webhook.url,
    Webhook.format,
    Webhook.secret,
    Webhook.previous_secret,
    Webhook.previous_secret_expires_at,
    Webhook.signing_key,
    Webhook.updated_at,
)


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
        endpoint = await self._claim(webhook_id)
        if endpoint is None:
            return 0
        try:
            return await self._deliver(endpoint, deadline)
        finally:
            await self._release(endpoint)

    async def _deliver(self, endpoint: Endpoint, deadline: float) -> int:
        """POST batches one at a time, in order; while one is in flight, the transaction that
        records the one before and takes the one after runs beside it."""
        found = await self._step(endpoint)
        delivered, recorded_next = 0, None
        while found.batch is not None:
            endpoint = await self._current(endpoint, found.stamp)
            batch, more = found.batch, time.monotonic() < deadline
            outcome, ahead = await self._post_beside(endpoint, batch, recorded_next, take=more)
            if not outcome.result.succeeded:
                await self._record_failure(endpoint, batch, outcome)
                return delivered
            delivered += len(batch.events)
            done = ledger.Delivered(batch.id, outcome.sent_at, outcome.result, len(batch.events))
            if ahead.batch is not None:
                found, recorded_next = ahead, done  # recorded with the batch after
                continue
            # Nothing was taken ahead: record this one, and look once more while time is left.
            found = await self._step(endpoint, delivered=done, take=more and ahead.held)
            recorded_next = None
        return delivered

    async def _post_beside(
        self,
        endpoint: Endpoint,
        batch: ledger.Batch,
        delivered: ledger.Delivered | None,
        *,
        take: bool,
    ) -> tuple[Outcome, ledger.Step]:
        """POST the batch while the bookkeeping of the one before and the one after runs.

        The next batch is only taken (made a pending batch), never sent, before this one's
        answer: if this one fails, the next waits behind it (see _record_failure)."""
        # On PostgreSQL the statement is sent first and runs while the body is built. SQLite
        # runs in a thread of this process, which needs the GIL between its statements: the
        # body is built first, so that they run while this thread waits on the network
        # rather than computes.
        built = self._build(endpoint, batch) if self.db.settings.is_sqlite else None
        booking = asyncio.ensure_future(
            self._step(endpoint, delivered=delivered, in_flight=batch.id, take=take)
        )
        posting = asyncio.ensure_future(self._post(endpoint, batch, built))
        outcome, found = await asyncio.gather(posting, booking, return_exceptions=True)
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(found, BaseException):
            raise found  # the POST is not recorded: the batch is sent again (at least once)
        return outcome, found

    async def _step(
        self,
        endpoint: Endpoint,
        *,
        delivered: ledger.Delivered | None = None,
        in_flight: str | None = None,
        take: bool = True,
    ) -> ledger.Step:
        """Record a delivered batch and take the next due one, in one transaction."""
        request = ledger.Request(
            webhook_id=endpoint.id,
            token=endpoint.token,
            now=clock.now(),
            new_batch_id="msg_" + new_id(),
            size=self.settings.webhook_batch_size,
            delivered=delivered,
            in_flight=in_flight,
            take=take,
        )
        return await ledger.step(self.db, request)

    def _build(self, endpoint: Endpoint, batch: ledger.Batch) -> Built:
        """The signed body (signed once per body), or the failure that prevents it."""
        sent_at = clock.now()
        try:
            secrets_in_use = service.secrets_in_use(endpoint, secret_key=self.secret_key)
            signed = _signed_body(
                endpoint, batch.events, secrets_in_use, batch.id, sent_at, self.secret_key
            )
        except Exception as exc:  # a failed attempt like any other: recorded, backed off
            log.warning("webhook %s: batch %s not built", endpoint.id, batch.id, exc_info=True)
            error = f"request not built: {type(exc).__name__}"
            return Built(sent_at, None, PostResult(None, error, None, 0))
        if signed is None:  # a batch with nothing in the endpoint's format counts as sent
            return Built(sent_at, None, PostResult(204, None, None, 0))
        return Built(sent_at, signed, None)

    async def _post(self, endpoint: Endpoint, batch: ledger.Batch, built: Built | None) -> Outcome:
        """POST the batch (built now unless it was); never raises but for cancellation."""
        if built is None:
            await asyncio.sleep(0)  # let the bookkeeping statement be sent first
            built = self._build(endpoint, batch)
        if built.signed is None:
            assert built.result is not None
            if not built.result.succeeded:  # not built: a failed delivery all the same
                observe_webhook_post(endpoint.id, endpoint.url, batch, built.result)
            return Outcome(built.sent_at, built.result)
        outcome = Outcome(built.sent_at, await self.client.post(endpoint.url, *built.signed))
        observe_webhook_post(endpoint.id, endpoint.url, batch, outcome.result)
        return outcome

    async def _claim(self, webhook_id: str) -> Endpoint | None:
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
                .returning(*ENDPOINT_COLUMNS)
                .execution_options(synchronize_session=False)
            )
            row = result.one_or_none()
            await session.commit()
        return None if row is None else _endpoint(row, token)

    async def _current(self, endpoint: Endpoint, stamp: datetime | None) -> Endpoint:
        """The endpoint's settings, read again when they changed since they were read."""
        if stamp is None or stamp == endpoint.stamp:
            return endpoint
        async with self.db.session() as session:
            row = (
                await session.execute(select(*ENDPOINT_COLUMNS).where(Webhook.id == endpoint.id))
            ).one_or_none()
        return endpoint if row is None else _endpoint(row, endpoint.token)

    async def _release(self, endpoint: Endpoint) -> None:
        """Give the endpoint's lease back (if it is still ours)."""
        async with self.db.session() as session:
            await session.execute(
                update(Webhook)
                .where(Webhook.id == endpoint.id, Webhook.lease_token == endpoint.token)
                .values(lease_token=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            await session.commit()

    async def _record_failure(
        self, endpoint: Endpoint, batch: ledger.Batch, outcome: Outcome
    ) -> None:
        """The failed attempt, the batch's backoff and the endpoint's health, fenced by the
        lease (the rare path: ORM objects, a few statements)."""
        result = outcome.result
        async with self.db.session() as session:
            # FOR NO KEY UPDATE, not FOR UPDATE: disabling an endpoint writes outbox rows for
            # the account's other endpoints, whose foreign keys take KEY SHARE locks on them;
            # FOR UPDATE would conflict with those, so two endpoints of one account disabled
            # at once deadlocked on PostgreSQL. On SQLite the lock is the write lock, taken
            # before the read: a PATCH that re-enabled the endpoint (and reset its failure
            # count) in between would otherwise be overwritten with the stale count.
            await lock_row(session, Webhook.id, endpoint.id, touch=Webhook.created_at)
            webhook = await session.get(Webhook, endpoint.id, populate_existing=True)
            row = await session.get(WebhookBatch, batch.id)
            if webhook is None or row is None or webhook.lease_token != endpoint.token:
                return  # the lease was lost; whoever holds it now records its own attempt
            row.attempt_count += 1
            session.add(
                WebhookAttempt(
                    webhook_id=endpoint.id,
                    batch_id=batch.id,
                    attempt=row.attempt_count,
                    attempted_at=outcome.sent_at,
                    duration_ms=result.duration_ms,
                    succeeded=False,
                    response_status=result.status,
                    error=result.error,
                    ip=result.ip,
                    event_count=len(batch.events),
                )
            )
            await self._failed(session, webhook, row, result)
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
            await _wait_behind(session, batch)
        reason = None
        if result.status == 410:
            reason = "the endpoint answered 410 Gone"
        elif webhook.consecutive_failures >= self.policy.disable_after:
            reason = f"{webhook.consecutive_failures} deliveries in a row failed"
        if reason is not None:
            await disable(session, webhook, reason=reason, last_error=result.error)


def _endpoint(row: Any, token: str) -> Endpoint:
    """An Endpoint from a row of ENDPOINT_COLUMNS."""
    return Endpoint(
        id=row.id,
        token=token,
        url=row.url,
        format=row.format,
        secret=row.secret,
        previous_secret=row.previous_secret,
        previous_secret_expires_at=row.previous_secret_expires_at,
        signing_key=row.signing_key,
        stamp=row.updated_at,
    )


async def _wait_behind(session: AsyncSession, batch: WebhookBatch) -> None:
    """Batches taken after a failing one wait at least as long, so that the endpoint is not
    found due (and leased for nothing) while its oldest batch backs off."""
    await session.execute(
        update(WebhookBatch)
        .where(
            WebhookBatch.webhook_id == batch.webhook_id,
            WebhookBatch.state == BatchState.PENDING,
            WebhookBatch.id != batch.id,
            WebhookBatch.next_attempt_at < batch.next_attempt_at,
        )
        .values(next_attempt_at=batch.next_attempt_at)
        .execution_options(synchronize_session=False)
    )


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
    endpoint: Endpoint,
    contexts: list[EventContext],
    secrets_in_use: list[str],
    batch_id: str,
    sent_at: datetime,
    secret_key: bytes,
) -> tuple[bytes, dict[str, str]] | None:
    """The body in the endpoint's format and its signature headers (None: nothing to send):
    Standard Webhooks' always, and SendGrid's too when the endpoint is signed."""
    body = _body(endpoint.format, contexts, sent_at)
    if body is None:
        return None
    headers = signature_headers(secrets_in_use, message_id=batch_id, timestamp=sent_at, body=body)
    if endpoint.signing_key is not None and endpoint.format == PayloadFormat.SENDGRID:
        headers.update(
            sendgrid_headers(secret_key, endpoint.signing_key, timestamp=sent_at, body=body)
        )
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


def build_dispatcher(settings: Settings, db: Database) -> Dispatcher:
    """A dispatcher with its own HTTP client and DNS resolver."""
    resolver = make_resolver(settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds())
    client = WebhookClient(
        resolver,
        timeout=settings.webhook_timeout.total_seconds(),
        allow_private=settings.allow_private_destinations,
    )
    return Dispatcher(settings, db, client)
