"""Suppressions, sending domains, webhooks and API keys: lists, and the forms that change them."""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import ApiKey
from app.accounts.scopes import Scope
from app.core import clock
from app.core.errors import ApiError
from app.dashboard.web import PageError, Signed, SignedDep, checked_form, redirect, render
from app.delivery.resolver import make_resolver
from app.deps import SessionDep, SettingsDep
from app.domains import rotation, verification
from app.domains import service as domains
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType
from app.webhooks import service as webhooks
from app.webhooks import signing
from app.webhooks.client import WebhookClient

router = APIRouter()
LIST_LIMIT = 100
DELIVERIES_SHOWN = 10


@router.get("/suppressions")
async def suppressions_page(
    request: Request, signed: SignedDep, db: SessionDep, email: str = "", notice: str = ""
) -> Response:
    """The account's suppressions, newest first, or those matching an address prefix."""
    signed.require(Scope.SUPPRESSION_READ)
    where = suppressions.ListFilter(account_id=signed.account_id, email=email.strip() or None)
    found = await suppressions.list_offset(db, where=where, offset=0, limit=LIST_LIMIT)
    return render(
        request, "suppressions.html", signed=signed, page="suppressions", entries=found,
        email=email, notice=notice, limit=LIST_LIMIT,
    )  # fmt: skip


@router.post("/suppressions")
async def add_suppression(request: Request, signed: SignedDep, db: SessionDep) -> Response:
    """Suppress an address by hand (type `manual`)."""
    signed.require(Scope.SUPPRESSION_CREATE)
    fields = await checked_form(request, signed)
    email = _address(fields.get("email", ""))
    reason = fields.get("reason", "").strip()[:255] or "added in the dashboard"
    await suppressions.suppress(
        db, account_id=signed.account_id, email=email, type=SuppressionType.MANUAL, reason=reason
    )
    await db.commit()
    return redirect("/dashboard/suppressions?notice=added")


@router.post("/suppressions/remove")
async def remove_suppression(request: Request, signed: SignedDep, db: SessionDep) -> Response:
    """Remove one entry (an address on one list)."""
    signed.require(Scope.SUPPRESSION_DELETE)
    fields = await checked_form(request, signed)
    kind = fields.get("type", "")
    if kind not in {t.value for t in SuppressionType}:
        raise PageError(400, "Unknown suppression type.")
    await suppressions.remove(
        db, account_id=signed.account_id, types=[kind], emails=[fields.get("email", "")]
    )
    await db.commit()
    return redirect("/dashboard/suppressions?notice=removed")


def _address(text: str) -> str:
    """A single address from the form, or a 400 page."""
    address = text.strip()
    local, at, domain = address.rpartition("@")
    if (
        not (at and local and "." in domain)
        or len(address) > 320
        or any(c.isspace() for c in address)
    ):
        raise PageError(400, f"{text!r} is not an email address.")
    return address


@router.get("/domains")
async def domains_page(
    request: Request, signed: SignedDep, db: SessionDep, settings: SettingsDep
) -> Response:
    """Sending domains, the records to publish, and each record's state at the last check."""
    signed.require(Scope.DOMAINS_READ)
    shown = []
    for domain in await domains.list_domains(db, account_id=signed.account_id):
        keys = await rotation.keys_of(db, domain.id)
        records = domains.dns_records(
            domain, hostname=settings.hostname, keys=keys, inbound_host=settings.inbound_hostname
        )
        shown.append((domain, records, _checked(domain.last_check)))
    return render(request, "domains.html", signed=signed, page="domains", domains=shown)


def _checked(report: dict[str, Any] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """The last check's verdicts by (record type, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for record in (report or {}).get("records", []):
        found[(record["type"], record["name"])] = record
    return found


@router.post("/domains/{domain_id}/check")
async def check_domain(
    request: Request, domain_id: str, signed: SignedDep, db: SessionDep, settings: SettingsDep
) -> Response:
    """Check every record in DNS now (uncached) and record the verdict."""
    signed.require(Scope.DOMAINS_UPDATE)
    await checked_form(request, signed)
    domain = next(
        (
            d
            for d in await domains.list_domains(db, account_id=signed.account_id)
            if d.id == domain_id
        ),
        None,
    )
    if domain is None:
        raise PageError(404, "No such domain in this account.")
    resolver = make_resolver(settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds())
    await verification.verify(
        db, resolver=resolver, domain=domain,
        context=await verification.check_context(settings, resolver),
        grace=settings.dkim_rotation_grace,
    )  # fmt: skip
    await db.commit()
    return redirect("/dashboard/domains")


@router.get("/webhooks")
async def webhooks_page(
    request: Request, signed: SignedDep, db: SessionDep, notice: str = ""
) -> Response:
    """Endpoints with their latest deliveries."""
    signed.require(Scope.WEBHOOKS_READ)
    shown = []
    for hook in await webhooks.list_all(db, account_id=signed.account_id):
        recent = await webhooks.deliveries(db, webhook=hook, before=None, limit=DELIVERIES_SHOWN)
        shown.append((hook, recent))
    return render(
        request, "webhooks.html", signed=signed, page="webhooks", webhooks=shown, notice=notice
    )


@router.post("/webhooks/{webhook_id}/test")
async def test_webhook(
    request: Request, webhook_id: str, signed: SignedDep, db: SessionDep, settings: SettingsDep
) -> Response:
    """POST a signed test event to the endpoint now and show what it answered (the test is
    not an event of the account: it is neither stored nor counted)."""
    signed.require(Scope.WEBHOOKS_UPDATE)
    await checked_form(request, signed)
    try:
        hook = await webhooks.get(db, account_id=signed.account_id, webhook_id=webhook_id)
    except ApiError:
        raise PageError(404, "No such webhook in this account.") from None
    now = clock.now()
    body = json.dumps(
        {
            "type": "test",
            "timestamp": now.isoformat(),
            "data": [{"type": "test", "created_at": now.isoformat()}],
        }
    )
    keys = webhooks.secrets_in_use(hook, secret_key=settings.secret_key_bytes())
    headers = signing.signature_headers(
        keys, message_id="test_" + secrets.token_hex(8), timestamp=now, body=body
    )
    resolver = make_resolver(settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds())
    client = WebhookClient(
        resolver, timeout=settings.webhook_timeout.total_seconds(),
        allow_private=settings.allow_private_destinations,
    )  # fmt: skip
    try:
        result = await client.post(hook.url, body.encode(), headers)
    finally:
        await client.close()
    outcome = f"HTTP {result.status}" if result.status is not None else (result.error or "failed")
    return render(
        request, "webhook_test.html", signed=signed, page="webhooks", webhook=hook,
        result=result, outcome=outcome,
    )  # fmt: skip


@router.get("/keys")
async def keys_page(request: Request, signed: SignedDep, db: SessionDep) -> Response:
    """The account's API keys (never their secrets: only the public prefix is stored)."""
    signed.require_full_access()
    found = await accounts.list_keys(db, account=signed.principal.account)
    return render(
        request, "keys.html", signed=signed, page="keys", keys=found, scopes=list(Scope),
        issued=None,
    )  # fmt: skip


@router.post("/keys")
async def create_key(request: Request, signed: SignedDep, db: SessionDep) -> Response:
    """A new key, shown on this response only (it is not stored)."""
    signed.require_full_access()
    body = (await request.body()).decode("utf-8", errors="replace")
    fields = await checked_form(request, signed)
    name = fields.get("name", "").strip()[:100]
    if not name:
        raise PageError(400, "Give the key a name.")
    chosen = _scopes(body)
    issued = await accounts.create_key(
        db, account=signed.principal.account, name=name, scopes=chosen or None
    )
    await db.commit()
    found = await accounts.list_keys(db, account=signed.principal.account)
    return render(
        request, "keys.html", signed=signed, page="keys", keys=found, scopes=list(Scope),
        issued=issued.plaintext,
    )  # fmt: skip


def _scopes(body: str) -> list[str]:
    """Every `scope` field of the form (a checkbox each), known scopes only."""
    known = {scope.value for scope in Scope}
    return sorted({v for k, v in parse_qsl(body) if k == "scope" and v in known})


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, signed: SignedDep, db: SessionDep) -> Response:
    """Revoke one of the account's keys (its sessions end on their next page)."""
    signed.require_full_access()
    await checked_form(request, signed)
    key = await _own_key(db, signed, key_id)
    await accounts.revoke_key(db, prefix=key.prefix)
    await db.commit()
    if key.id == signed.principal.api_key.id:
        return redirect("/dashboard/signin")
    return redirect("/dashboard/keys")


async def _own_key(db: SessionDep, signed: Signed, key_id: str) -> ApiKey:
    """A key of the signed-in account, or a 404 page (never another account's)."""
    key = (
        await db.execute(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == signed.account_id)
        )
    ).scalar_one_or_none()
    if key is None:
        raise PageError(404, "No such key in this account.")
    return key
