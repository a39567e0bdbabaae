"""Webhook endpoints: create, change, rotate secrets, delete, replay, list deliveries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock
from app.core.errors import NotFound
from app.events.models import Event
from app.webhooks import signing
from app.webhooks.models import Webhook, WebhookAttempt, WebhookBatch, WebhookOutbox
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
    now = clock.now()
    webhook.previous_secret = webhook.secret
    webhook.previous_secret_expires_at = now + ROTATION_GRACE
    webhook.secret = signing.seal(secret_key, secret)
    webhook.updated_at = now
    await session.flush()
    return secret, now + ROTATION_GRACE


def secrets_in_use(webhook: Webhook, *, secret_key: bytes) -> list[str]:
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


async def replay(session: AsyncSession, *, webhook: Webhook, since: datetime) -> int:
    """Queue again every event of the account since `since` that the endpoint wants."""
    query = select(literal(webhook.id), Event.id, literal(clock.now())).where(
        Event.account_id == webhook.account_id, Event.created_at >= since
    )
    if webhook.event_types:
        query = query.where(Event.type.in_(webhook.event_types))
    statement = insert(WebhookOutbox).from_select(
        ["webhook_id", "event_id", "created_at"], query.order_by(Event.id)
    )
    result = await session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


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
