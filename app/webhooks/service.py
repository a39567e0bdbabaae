"""Webhook endpoints: create, change, rotate secrets, delete, replay, list deliveries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.core import clock
from app.core.db import lock_row
from app.core.errors import BadRequest, Conflict, NotFound
from app.events.models import Event
from app.webhooks import signing
from app.webhooks.models import (
    PayloadFormat,
    Webhook,
    WebhookAttempt,
    WebhookBatch,
    WebhookOutbox,
)
from app.webhooks.schemas import DeliveryView, WebhookCreate, WebhookUpdate

ROTATION_GRACE = timedelta(hours=24)  # the old secret keeps signing this long


async def create(
    session: AsyncSession, *, account_id: str, request: WebhookCreate, secret_key: bytes
) -> tuple[Webhook, str]:
    """A new endpoint and its secret in clear (returned once, stored encrypted)."""
    secret = signing.new_secret()
    now = clock.now()
    webhook = Webhook(
        account_id=account_id,
        url=request.url,
        description=request.description,
        event_types=request.event_types,
        format=request.format.value,
        enabled=request.enabled,
        secret=signing.seal(secret_key, secret),
        created_at=now,
        updated_at=now,
    )
    session.add(webhook)
    await session.flush()
    return webhook, secret


async def check_room(session: AsyncSession, *, account_id: str, max_webhooks: int) -> None:
    """400 when the account has its maximum of endpoints (each costs an outbox row per event)."""
    # Concurrent creates count one after the other.
    await accounts.lock_account(session, account_id=account_id)
    count = await session.scalar(
        select(func.count()).select_from(Webhook).where(Webhook.account_id == account_id)
    )
    if (count or 0) >= max_webhooks:
        raise BadRequest(
            f"You have reached the maximum number of webhooks ({max_webhooks}) for this "
            "account; delete one first (COLUMBA_MAX_WEBHOOKS).",
            "url",
        )


async def get(session: AsyncSession, *, account_id: str, webhook_id: str) -> Webhook:
    """The account's endpoint; 404 for another account's."""
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None or webhook.account_id != account_id:
        raise NotFound("webhook not found", "id")
    return webhook


async def list_all(session: AsyncSession, *, account_id: str) -> list[Webhook]:
    """The account's endpoints, oldest first."""
    query = select(Webhook).where(Webhook.account_id == account_id).order_by(Webhook.id)
    return list((await session.execute(query)).scalars())


async def change(session: AsyncSession, *, webhook: Webhook, request: WebhookUpdate) -> Webhook:
    """Apply the given fields; enabling again clears the failure record and retries now."""
    changes: dict[str, Any] = request.model_dump(exclude_unset=True)
    if "format" in changes and changes["format"] is not None:
        changes["format"] = changes["format"].value
    for name, value in changes.items():
        if name != "enabled" or value is not None:
            setattr(webhook, name, value)
    now = clock.now()
    if request.enabled:
        webhook.consecutive_failures = 0
        webhook.disabled_reason = None
        webhook.disabled_at = None
        await session.execute(
            update(WebhookBatch)
            .where(WebhookBatch.webhook_id == webhook.id, WebhookBatch.state == "pending")
            .values(next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
    webhook.updated_at = now
    await session.flush()
    return webhook


async def rotate_secret(
    session: AsyncSession, *, webhook: Webhook, secret_key: bytes
) -> tuple[str, datetime]:
    """A new secret; the current one keeps signing too until the grace period ends."""
    secret = signing.new_secret()
    # Under the endpoint's lock, from a fresh read: two rotations at once both kept the same
    # previous secret, and the first caller's new secret never signed anything.
    await lock_row(session, Webhook.id, webhook.id, touch=Webhook.created_at)
    await session.refresh(webhook)
    now = clock.now()
    webhook.previous_secret = webhook.secret
    webhook.previous_secret_expires_at = now + ROTATION_GRACE
    webhook.secret = signing.seal(secret_key, secret)
    webhook.updated_at = now
    await session.flush()
    return secret, now + ROTATION_GRACE


class SealedSecrets(Protocol):
    """An endpoint's stored secrets: the ORM row, or the dispatcher's copy of it."""

    @property
    def secret(self) -> bytes:
        """The current secret, sealed."""

    @property
    def previous_secret(self) -> bytes | None:
        """The secret before the last rotation, sealed."""

    @property
    def previous_secret_expires_at(self) -> datetime | None:
        """When the previous secret stops signing."""


def secrets_in_use(webhook: SealedSecrets, *, secret_key: bytes) -> list[str]:
    """The current secret, and the previous one while its grace period lasts."""
    found = [signing.unseal(secret_key, webhook.secret)]
    expires = webhook.previous_secret_expires_at
    if webhook.previous_secret is not None and expires is not None and expires > clock.now():
        found.append(signing.unseal(secret_key, webhook.previous_secret))
    return found


async def delete(session: AsyncSession, *, webhook: Webhook) -> None:
    """Remove the endpoint with its outbox, batches and attempts."""
    await session.delete(webhook)
    await session.flush()


async def replay(
    session: AsyncSession,
    *,
    webhook: Webhook,
    since: datetime,
    until: datetime | None,
    max_events: int,
) -> int:
    """Queue again every event of the account in [since, until) that the endpoint wants.

    At most `max_events` at once, counting what still waits for the endpoint: 400 for a
    larger range, 409 while earlier events are still queued, so that replays cannot pile up
    outbox rows faster than the endpoint takes them."""
    conditions = [Event.account_id == webhook.account_id, Event.created_at >= since]
    if until is not None:
        conditions.append(Event.created_at < until)
    if webhook.event_types:
        conditions.append(Event.type.in_(webhook.event_types))
    events = select(Event.id).where(*conditions)
    wanted = await _count_up_to(session, events, max_events + 1)
    if wanted > max_events:
        raise BadRequest(
            f"A replay queues at most {max_events} events and this one holds more: narrow it "
            "with since and until (COLUMBA_WEBHOOK_REPLAY_MAX_EVENTS).",
            "since",
        )
    waiting = select(WebhookOutbox.id).where(
        WebhookOutbox.webhook_id == webhook.id, WebhookOutbox.batch_id.is_(None)
    )
    pending = await _count_up_to(session, waiting, max_events + 1)
    if pending + wanted > max_events:
        raise Conflict(
            f"{pending} events are still waiting to be sent to this endpoint; replay these "
            f"{wanted} once they have been (at most {max_events} may wait at once).",
            "since",
        )
    rows = select(literal(webhook.id), Event.id, literal(clock.now())).where(*conditions)
    statement = insert(WebhookOutbox).from_select(
        ["webhook_id", "event_id", "created_at"], rows.order_by(Event.id)
    )
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


async def _count_up_to(session: AsyncSession, query: Select[Any], cap: int) -> int:
    """How many rows `query` finds, reading at most `cap` of them."""
    limited = query.limit(cap).subquery()
    return int(await session.scalar(select(func.count()).select_from(limited)) or 0)


async def deliveries(
    session: AsyncSession, *, webhook: Webhook, before: int | None, limit: int
) -> list[DeliveryView]:
    """Attempts newest first (before the cursor id), with their batch's state."""
    query = (
        select(WebhookAttempt, WebhookBatch.state, WebhookBatch.next_attempt_at)
        .join(WebhookBatch, WebhookBatch.id == WebhookAttempt.batch_id)
        .where(WebhookAttempt.webhook_id == webhook.id)
        .order_by(WebhookAttempt.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(WebhookAttempt.id < before)
    return [
        DeliveryView(
            id=attempt.id,
            webhook_message_id=attempt.batch_id,
            attempt=attempt.attempt,
            attempted_at=attempt.attempted_at,
            succeeded=attempt.succeeded,
            response_status=attempt.response_status,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
            event_count=attempt.event_count,
            ip=attempt.ip,
            batch_state=state,
            next_attempt_at=next_at if state == "pending" else None,
        )
        for attempt, state, next_at in await session.execute(query)
    ]


async def list_in_format(
    session: AsyncSession, *, account_id: str, payload_format: PayloadFormat
) -> list[Webhook]:
    """The account's endpoints of one payload format, oldest first."""
    query = (
        select(Webhook)
        .where(Webhook.account_id == account_id, Webhook.format == payload_format.value)
        .order_by(Webhook.created_at, Webhook.id)
    )
    return list((await session.execute(query)).scalars())


async def with_url(session: AsyncSession, *, account_id: str, url: str) -> Webhook | None:
    """The account's endpoint sending to `url`, if any."""
    query = select(Webhook).where(Webhook.account_id == account_id, Webhook.url == url).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def set_signed(
    session: AsyncSession, *, webhook: Webhook, enabled: bool, secret_key: bytes
) -> Webhook:
    """Sign the endpoint's requests as SendGrid does (a new ECDSA key when turned on) or stop;
    the dispatcher reads the change before its next batch (updated_at moves)."""
    if enabled and webhook.signing_key is None:
        webhook.signing_key, webhook.public_key = signing.new_ecdsa_key(secret_key)
    elif not enabled:
        webhook.signing_key = webhook.public_key = None
    webhook.updated_at = clock.now()
    await session.flush()
    return webhook
