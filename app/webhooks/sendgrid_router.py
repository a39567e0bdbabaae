"""HTTP: SendGrid's event webhook settings (`/v3/user/webhooks/event/*`) over the endpoints of
`/v1/webhooks`: the endpoints these routes show are those in SendGrid's payload format.

As SendGrid, the forms without an id act on the oldest endpoint; signing is turned on per
endpoint and signs with ECDSA P-256 (app.webhooks.signing), which SendGrid's own
`EventWebhook` helpers verify."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.scopes import Scope
from app.accounts.service import Principal
from app.core import clock
from app.core.config import Settings
from app.core.errors import BadRequest, NotFound
from app.core.ids import new_id
from app.delivery.resolver import make_resolver
from app.deps import SessionDep, SettingsDep, WebhooksEditor, WebhooksReader, require
from app.events.models import EventType
from app.openapi import errors
from app.routing import StrictJsonRoute
from app.webhooks import payloads, service, signing
from app.webhooks.client import PostResult, WebhookClient
from app.webhooks.models import PayloadFormat, Webhook
from app.webhooks.payloads import EventContext
from app.webhooks.router import checked_url
from app.webhooks.schemas import WebhookCreate, WebhookUpdate
from app.webhooks.sendgrid_schemas import (
    SgSigning,
    SgSigningRequest,
    SgTestRequest,
    SgWebhook,
    SgWebhookList,
    SgWebhookRequest,
    event_types_of,
    flags_of,
    unset_webhook,
)

router = APIRouter(tags=["webhooks"], route_class=StrictJsonRoute)

WebhooksTester = Annotated[Principal, Depends(require(Scope.WEBHOOKS_TEST))]
SETTINGS = "/v3/user/webhooks/event/settings"
INVALID_ID = "Invalid id provided."
TEST_EMAIL = "example@test.com"


async def _endpoints(session: AsyncSession, principal: Principal) -> list[Webhook]:
    """The account's SendGrid-format endpoints, oldest first."""
    return await service.list_in_format(
        session, account_id=principal.account.id, payload_format=PayloadFormat.SENDGRID
    )


async def _endpoint(session: AsyncSession, principal: Principal, webhook_id: str | None) -> Webhook:
    """The endpoint with this id, or the oldest without one; 404 otherwise."""
    if webhook_id is None:
        found = await _endpoints(session, principal)
        if not found:
            raise NotFound(INVALID_ID, "id")
        return found[0]
    webhook = await session.get(Webhook, webhook_id)
    if (
        webhook is None
        or webhook.account_id != principal.account.id
        or webhook.format != PayloadFormat.SENDGRID
    ):
        raise NotFound(INVALID_ID, "id")
    return webhook


def _no_oauth(body: SgWebhookRequest | SgTestRequest) -> None:
    """400 for OAuth credentials: requests are never sent without a token asked for."""
    if body.oauth_client_id or body.oauth_client_secret or body.oauth_token_url:
        raise BadRequest(
            "OAuth for the event webhook is not supported: verify requests by their signature",
            "oauth_client_id",
        )


async def _checked(body: SgWebhookRequest, settings: Settings) -> None:
    """The URL is one we may send to and no other endpoint of the account uses it."""
    _no_oauth(body)
    await checked_url(body.url, settings)


async def _unique_url(
    session: AsyncSession, principal: Principal, url: str, webhook: Webhook | None
) -> None:
    """400 when another endpoint of the account already sends to `url` (as SendGrid); under
    the account's lock, so two requests for one URL cannot both find it free."""
    await accounts.lock_account(session, account_id=principal.account.id)
    other = await service.with_url(session, account_id=principal.account.id, url=url)
    if other is not None and other is not webhook:
        raise BadRequest(f"Webhook at '{url}' already exists. Please provide a unique URL.", "url")


async def _create(
    session: AsyncSession, principal: Principal, body: SgWebhookRequest, settings: Settings
) -> Webhook:
    """A new SendGrid-format endpoint."""
    await _checked(body, settings)
    await _unique_url(session, principal, body.url, None)
    await service.check_room(
        session, account_id=principal.account.id, max_webhooks=settings.max_webhooks
    )
    request = WebhookCreate(
        url=body.url,
        description=body.friendly_name or "",
        event_types=event_types_of(body.flags()),
        format=PayloadFormat.SENDGRID,
        enabled=body.enabled if body.enabled is not None else True,
    )
    webhook, _ = await service.create(
        session,
        account_id=principal.account.id,
        request=request,
        secret_key=settings.secret_key_bytes(),
    )
    return webhook


async def _update(
    session: AsyncSession,
    principal: Principal,
    webhook: Webhook,
    body: SgWebhookRequest,
    settings: Settings,
) -> Webhook:
    """Apply the fields given; flags left out keep their value."""
    await _checked(body, settings)
    await _unique_url(session, principal, body.url, webhook)
    fields: dict[str, object] = {
        "url": body.url,
        "event_types": event_types_of({**flags_of(webhook), **body.flags()}),
    }
    if body.friendly_name is not None:
        fields["description"] = body.friendly_name
    if body.enabled is not None:
        fields["enabled"] = body.enabled
    changes = WebhookUpdate.model_validate(fields)
    return await service.change(session, webhook=webhook, request=changes)


@router.post(SETTINGS, status_code=201, response_model=SgWebhook, responses=errors(400, 401, 403))
async def sg_create_webhook(
    body: SgWebhookRequest, principal: WebhooksEditor, session: SessionDep, settings: SettingsDep
) -> SgWebhook:
    """Add an event webhook in SendGrid's format (flags left out are off)."""
    webhook = await _create(session, principal, body, settings)
    await session.commit()
    return SgWebhook.of(webhook)


@router.get(SETTINGS, response_model=SgWebhook, responses=errors(401, 403))
async def sg_get_oldest(principal: WebhooksReader, session: SessionDep) -> SgWebhook:
    """The oldest event webhook (SendGrid's single-webhook form); a disabled one without URL
    while there is none, so that a script reading before setting works as with SendGrid."""
    found = await _endpoints(session, principal)
    return SgWebhook.of(found[0]) if found else unset_webhook()


@router.patch(SETTINGS, response_model=SgWebhook, responses=errors(400, 401, 403))
async def sg_update_oldest(
    body: SgWebhookRequest, principal: WebhooksEditor, session: SessionDep, settings: SettingsDep
) -> SgWebhook:
    """Change the oldest event webhook, or create it when there is none (SendGrid's
    single-webhook form, which deploy scripts use to set the URL)."""
    found = await _endpoints(session, principal)
    if found:
        webhook = await _update(session, principal, found[0], body, settings)
    else:
        webhook = await _create(session, principal, body, settings)
    await session.commit()
    return SgWebhook.of(webhook)


@router.get(f"{SETTINGS}/all", response_model=SgWebhookList, responses=errors(401, 403))
async def sg_list_webhooks(
    principal: WebhooksReader, session: SessionDep, settings: SettingsDep
) -> SgWebhookList:
    """Every event webhook in SendGrid's format, oldest first."""
    found = await _endpoints(session, principal)
    return SgWebhookList(
        max_allowed=settings.max_webhooks, webhooks=[SgWebhook.of(w) for w in found]
    )


def _signing(webhook: Webhook) -> SgSigning:
    """The endpoint's public key ('' while unsigned)."""
    return SgSigning(id=webhook.id, public_key=webhook.public_key or "")


@router.get(f"{SETTINGS}/signed", response_model=SgSigning, responses=errors(401, 403, 404))
async def sg_get_signed_oldest(principal: WebhooksReader, session: SessionDep) -> SgSigning:
    """The oldest event webhook's public key."""
    return _signing(await _endpoint(session, principal, None))


@router.get(
    f"{SETTINGS}/signed/{{webhook_id}}", response_model=SgSigning, responses=errors(401, 403, 404)
)
async def sg_get_signed(
    webhook_id: str, principal: WebhooksReader, session: SessionDep
) -> SgSigning:
    """An event webhook's public key."""
    return _signing(await _endpoint(session, principal, webhook_id))


async def _toggle(
    session: AsyncSession,
    principal: Principal,
    webhook_id: str | None,
    body: SgSigningRequest,
    settings: Settings,
) -> SgSigning:
    """Turn signing on (a new key) or off, and answer the public key."""
    webhook = await _endpoint(session, principal, webhook_id)
    await service.set_signed(
        session, webhook=webhook, enabled=body.enabled, secret_key=settings.secret_key_bytes()
    )
    await session.commit()
    return _signing(webhook)


@router.patch(f"{SETTINGS}/signed", response_model=SgSigning, responses=errors(400, 401, 403, 404))
async def sg_sign_oldest(
    body: SgSigningRequest, principal: WebhooksEditor, session: SessionDep, settings: SettingsDep
) -> SgSigning:
    """Sign the oldest event webhook's requests (or stop)."""
    return await _toggle(session, principal, None, body, settings)


@router.patch(
    f"{SETTINGS}/signed/{{webhook_id}}",
    response_model=SgSigning,
    responses=errors(400, 401, 403, 404),
)
async def sg_sign(
    webhook_id: str,
    body: SgSigningRequest,
    principal: WebhooksEditor,
    session: SessionDep,
    settings: SettingsDep,
) -> SgSigning:
    """Sign an event webhook's requests (or stop): `X-Twilio-Email-Event-Webhook-Signature`
    and `-Timestamp`, verifiable with the public key answered."""
    return await _toggle(session, principal, webhook_id, body, settings)


@router.get(f"{SETTINGS}/{{webhook_id}}", response_model=SgWebhook, responses=errors(401, 403, 404))
async def sg_get_webhook(
    webhook_id: str, principal: WebhooksReader, session: SessionDep
) -> SgWebhook:
    """One event webhook."""
    return SgWebhook.of(await _endpoint(session, principal, webhook_id))


@router.patch(
    f"{SETTINGS}/{{webhook_id}}", response_model=SgWebhook, responses=errors(400, 401, 403, 404)
)
async def sg_update_webhook(
    webhook_id: str,
    body: SgWebhookRequest,
    principal: WebhooksEditor,
    session: SessionDep,
    settings: SettingsDep,
) -> SgWebhook:
    """Change an event webhook; flags left out keep their value."""
    webhook = await _endpoint(session, principal, webhook_id)
    await _update(session, principal, webhook, body, settings)
    await session.commit()
    return SgWebhook.of(webhook)


@router.delete(f"{SETTINGS}/{{webhook_id}}", status_code=204, responses=errors(401, 403, 404))
async def sg_delete_webhook(
    webhook_id: str, principal: WebhooksEditor, session: SessionDep
) -> Response:
    """Remove an event webhook and what is queued for it."""
    webhook = await _endpoint(session, principal, webhook_id)
    await service.delete(session, webhook=webhook)
    await session.commit()
    return Response(status_code=204)


def sample_events(now: datetime) -> list[EventContext]:
    """One sample of every event SendGrid's format carries, as SendGrid's test sends."""
    message_id = new_id()
    return [
        EventContext(
            id=index,
            type=event_type,
            created_at=now,
            data={"response": "250 OK", "reason": "test", "url": "https://example.com"},
            message_id=message_id,
            recipient_id=new_id(),
            smtp_id=f"<{message_id}.p0@columba.test>",
            email=TEST_EMAIL,
        )
        for index, event_type in enumerate(payloads.SENDGRID_NAMES, start=1)
        if isinstance(event_type, EventType)
    ]


async def _post_test(webhook: Webhook | None, url: str, settings: Settings) -> PostResult:
    """POST the sample events to `url`, signed with the endpoint's keys when there is one."""
    now = clock.now()
    body = payloads.sendgrid_body(sample_events(now)) or "[]"
    headers: dict[str, str] = {}
    secret_key = settings.secret_key_bytes()
    if webhook is not None:
        in_use = service.secrets_in_use(webhook, secret_key=secret_key)
        headers = signing.signature_headers(
            in_use, message_id="msg_" + new_id(), timestamp=now, body=body
        )
        if webhook.signing_key is not None:
            headers.update(
                signing.sendgrid_headers(secret_key, webhook.signing_key, timestamp=now, body=body)
            )
    resolver = make_resolver(settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds())
    client = WebhookClient(
        resolver,
        timeout=settings.webhook_timeout.total_seconds(),
        allow_private=settings.allow_private_destinations,
    )
    try:
        return await client.post(url, body.encode(), headers)
    finally:
        await client.close()


@router.post("/v3/user/webhooks/event/test", status_code=204, responses=errors(400, 401, 403, 404))
async def sg_test_webhook(
    body: SgTestRequest, principal: WebhooksTester, session: SessionDep, settings: SettingsDep
) -> Response:
    """POST sample events to `url`, signed as endpoint `id` (or the endpoint with that URL)
    signs; 400 with what went wrong when the URL does not answer 2xx."""
    _no_oauth(body)
    await checked_url(body.url, settings)
    if body.id is not None:
        webhook: Webhook | None = await _endpoint(session, principal, body.id)
    else:
        webhook = await service.with_url(session, account_id=principal.account.id, url=body.url)
    result = await _post_test(webhook, body.url, settings)
    if not result.succeeded:
        answer = f"HTTP {result.status}" if result.status is not None else result.error
        raise BadRequest(f"the test event was not accepted: {answer}", "url")
    return Response(status_code=204)
