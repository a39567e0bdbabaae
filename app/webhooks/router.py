"""HTTP: `/v1/webhooks`: endpoints, secret rotation, deliveries and replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.common.fields import UtcTime, as_int64
from app.core.config import Settings
from app.core.errors import BadRequest
from app.delivery.resolver import make_resolver
from app.deps import SessionDep, SettingsDep, WebhooksEditor, WebhooksReader
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.webhooks import service
from app.webhooks.destinations import DestinationError, check_url
from app.webhooks.schemas import (
    DeliveryList,
    ReplayQueued,
    SecretRotated,
    WebhookCreate,
    WebhookList,
    WebhookUpdate,
    WebhookView,
    WebhookWithSecret,
)

router = APIRouter(tags=["webhooks"], route_class=StrictJsonRoute)


async def checked_url(url: str, settings: Settings) -> str:
    """400 unless the URL is http(s) and resolves to addresses we may send to."""
    resolver = make_resolver(settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds())
    try:
        await check_url(resolver, url, allow_private=settings.allow_private_destinations)
    except DestinationError as exc:
        raise BadRequest(str(exc), "url") from exc
    return url


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=WebhookWithSecret,
    responses=errors(400, 401, 403),
)
async def create_webhook(
    body: WebhookCreate, principal: WebhooksEditor, session: SessionDep, settings: SettingsDep
) -> WebhookWithSecret:
    """Add an endpoint; its signing secret is in this answer and never again."""
    await checked_url(body.url, settings)
    await service.check_room(
        session, account_id=principal.account.id, max_webhooks=settings.max_webhooks
    )
    webhook, secret = await service.create(
        session,
        account_id=principal.account.id,
        request=body,
        secret_key=settings.secret_key_bytes(),
    )
    await session.commit()
    return WebhookWithSecret.model_validate({**_fields(webhook), "secret": secret})


def _fields(webhook: object) -> dict[str, object]:
    """An endpoint's public fields."""
    return WebhookView.model_validate(webhook).model_dump()


@router.get("/v1/webhooks", response_model=WebhookList, responses=errors(401, 403))
async def list_webhooks(principal: WebhooksReader, session: SessionDep) -> WebhookList:
    """The account's endpoints."""
    found = await service.list_all(session, account_id=principal.account.id)
    return WebhookList(webhooks=[WebhookView.model_validate(webhook) for webhook in found])


@router.get(
    "/v1/webhooks/{webhook_id}", response_model=WebhookView, responses=errors(401, 403, 404)
)
async def get_webhook(
    webhook_id: str, principal: WebhooksReader, session: SessionDep
) -> WebhookView:
    """One endpoint, with its health."""
    webhook = await service.get(session, account_id=principal.account.id, webhook_id=webhook_id)
    return WebhookView.model_validate(webhook)


@router.patch(
    "/v1/webhooks/{webhook_id}", response_model=WebhookView, responses=errors(400, 401, 403, 404)
)
async def update_webhook(
    webhook_id: str,
    body: WebhookUpdate,
    principal: WebhooksEditor,
    session: SessionDep,
    settings: SettingsDep,
) -> WebhookView:
    """Change URL, event types, format or description; `enabled: true` re-enables it."""
    webhook = await service.get(session, account_id=principal.account.id, webhook_id=webhook_id)
    if body.url is not None:
        await checked_url(body.url, settings)
    await service.change(session, webhook=webhook, request=body)
    await session.commit()
    return WebhookView.model_validate(webhook)


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, responses=errors(401, 403, 404))
async def delete_webhook(
    webhook_id: str, principal: WebhooksEditor, session: SessionDep
) -> Response:
    """Remove an endpoint and everything queued for it."""
    webhook = await service.get(session, account_id=principal.account.id, webhook_id=webhook_id)
    await service.delete(session, webhook=webhook)
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{webhook_id}/rotate-secret",
    response_model=SecretRotated,
    responses=errors(401, 403, 404),
)
async def rotate_secret(
    webhook_id: str, principal: WebhooksEditor, session: SessionDep, settings: SettingsDep
) -> SecretRotated:
    """A new secret (shown once); the old one signs alongside it for 24 hours."""
    webhook = await service.get(session, account_id=principal.account.id, webhook_id=webhook_id)
    secret, expires = await service.rotate_secret(
        session, webhook=webhook, secret_key=settings.secret_key_bytes()
    )
    await session.commit()
    return SecretRotated(secret=secret, previous_secret_expires_at=expires)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses=errors(400, 401, 403, 404),
)
async def list_deliveries(
    webhook_id: str,
    principal: WebhooksReader,
    session: SessionDep,
    after: Annotated[str | None, Query(description="A `next_cursor` from an earlier page.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """Every attempt to deliver to this endpoint, newest first."""
    webhook = await service.get(session, account_id=principal.account.id, webhook_id=webhook_id)
    before = as_int64(after) if after else None
    if after and before is None:
        raise BadRequest("after must be a value returned as next_cursor", "after")
    found = await service.deliveries(session, webhook=webhook, before=before, limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    return DeliveryList(deliveries=found, next_cursor=str(found[-1].id) if more else None)


@router.post(
    "/v1/webhooks/{webhook_id}/replay",
    status_code=202,
    response_model=ReplayQueued,
    responses=errors(400, 401, 403, 404, 409),
)
async def replay(
    webhook_id: str,
    principal: WebhooksEditor,
    session: SessionDep,
    settings: SettingsDep,
    since: Annotated[UtcTime, Query(description="Resend events created at or after this time.")],
    until: Annotated[
        UtcTime | None, Query(description="…and before this time (default: up to now).")
    ] = None,
) -> ReplayQueued:
    """Queue the account's events in [since, until) for this endpoint again (new batches): at
    most COLUMBA_WEBHOOK_REPLAY_MAX_EVENTS (10,000) at once, counting those still waiting."""
    if until is not None and until <= since:
        raise BadRequest("until must be after since", "until")
    webhook = await service.get(session, account_id=principal.account.id, webhook_id=webhook_id)
    queued = await service.replay(
        session,
        webhook=webhook,
        since=since,
        until=until,
        max_events=settings.webhook_replay_max_events,
    )
    await session.commit()
    return ReplayQueued(queued=queued)
