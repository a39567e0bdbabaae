"""HTTP: SendGrid's domain authentication (`/v3/whitelabel/domains`) over the same service as
`/v1/domains` and `columba domains`.

Columba signs with keys of its own and publishes no DNS zone, so every domain is what SendGrid
calls "manual security" (`automatic_security: false`): the answer lists the TXT and MX records
to publish in SendGrid's shape for it (`dns.mail_server`, `subdomain_spf`, `domain_spf`,
`dkim`), not CNAMEs to a provider's zone."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.scopes import Scope
from app.accounts.service import Principal
from app.core import signals
from app.core.config import Settings
from app.core.errors import BadRequest, Conflict, NotFound
from app.core.queue import Queue
from app.delivery.resolver import make_resolver
from app.deps import DomainsReader, DomainsUpdater, QueueDep, SessionDep, SettingsDep, require
from app.domains import service, verification
from app.domains.checks import DomainReport, RecordCheck, RecordStatus
from app.domains.models import Domain
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["domains"], route_class=StrictJsonRoute)

DomainsCreator = Annotated[Principal, Depends(require(Scope.DOMAINS_CREATE))]
DomainsDeleter = Annotated[Principal, Depends(require(Scope.DOMAINS_DELETE))]

LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # RFC 1035 §2.3.1, lower-cased
MAX_NAME = 253
SELECTOR = re.compile(r"^[a-z0-9]{3}$")  # SendGrid: "three letters or numbers"
# SendGrid's names for our checks (app.domains.checks kinds) in manual security.
RECORD_KEYS = {
    "bounce_mx": "mail_server",
    "bounce_spf": "subdomain_spf",
    "spf": "domain_spf",
    "dkim": "dkim",
}


class SgDomainCreate(BaseModel):
    """`POST /v3/whitelabel/domains`: `subdomain` is the return-path label (bounces come back
    there), `custom_dkim_selector` three letters or digits; SendGrid's other fields are
    accepted and have no effect here (see README)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"domain": "shop.example", "subdomain": "em"}]},
    )

    domain: Annotated[str, Field(min_length=1, max_length=253)]
    subdomain: str | None = None
    custom_dkim_selector: str | None = None
    username: str | None = None
    ips: list[str] = []
    custom_spf: bool = False
    default: bool = False
    automatic_security: bool = False
    region: str | None = None


class SgRecord(BaseModel):
    """One record to publish and whether its last check found it."""

    valid: bool
    type: str
    host: str
    data: str


class SgDomain(BaseModel):
    """An authenticated domain in SendGrid's manual-security shape."""

    id: str
    user_id: str
    subdomain: str
    domain: str
    username: str
    ips: list[str]
    custom_spf: bool
    default: bool
    legacy: bool
    automatic_security: bool
    valid: bool
    dns: dict[str, SgRecord]


class SgRecordResult(BaseModel):
    """A record's verdict: `reason` says what is wrong with it."""

    valid: bool
    reason: str | None


class SgValidation(BaseModel):
    """`POST /v3/whitelabel/domains/{id}/validate`."""

    id: str
    valid: bool
    validation_results: dict[str, SgRecordResult]


def _by_name(records: list[RecordCheck], selector: str) -> dict[str, RecordCheck]:
    """Checks by SendGrid's name (for `dkim`, that of the RSA key that signs)."""
    found: dict[str, RecordCheck] = {}
    for record in records:
        key = RECORD_KEYS.get(record.kind)
        if key is None or key in found:
            continue
        if key == "dkim" and record.selector not in (None, selector):
            continue
        found[key] = record
    return found


def _checks(domain: Domain) -> dict[str, RecordCheck]:
    """The domain's last stored check of each record, by SendGrid's name."""
    stored = (domain.last_check or {}).get("records", [])
    records = [RecordCheck(**{**r, "status": RecordStatus(r["status"])}) for r in stored]
    return _by_name(records, domain.dkim_selector)


def _records(domain: Domain, settings: Settings) -> dict[str, SgRecord]:
    """The records to publish, in SendGrid's names, each valid when its last check was."""
    checks = _checks(domain)
    to_publish = service.dns_records(
        domain, hostname=settings.hostname, inbound_host=settings.inbound_hostname
    )
    by_key = {
        "dkim": to_publish[0],
        "domain_spf": next(r for r in to_publish if r.name == domain.name and r.type == "TXT"),
        "mail_server": next(r for r in to_publish if r.type == "MX"),
        "subdomain_spf": next(
            r for r in to_publish if r.name == domain.bounce_domain and r.type == "TXT"
        ),
    }
    return {
        key: SgRecord(
            valid=key in checks and checks[key].status is RecordStatus.VALID,
            type=record.type.lower(),
            host=record.name,
            data=record.value.removeprefix("10 ").rstrip(".")
            if record.type == "MX"
            else record.value,
        )
        for key, record in by_key.items()
    }


def _view(domain: Domain, principal: Principal, settings: Settings) -> SgDomain:
    """The domain as SendGrid shows it."""
    return SgDomain(
        id=domain.id,
        user_id=domain.account_id,
        subdomain=domain.bounce_domain.removesuffix("." + domain.name),
        domain=domain.name,
        username=principal.account.name,
        ips=[],
        custom_spf=False,
        default=False,
        legacy=False,
        automatic_security=False,
        valid=domain.verified_at is not None,
        dns=_records(domain, settings),
    )


async def _domain(session: AsyncSession, principal: Principal, domain_id: str) -> Domain:
    """The account's domain, or 404."""
    domain = await session.get(Domain, domain_id)
    if domain is None or domain.account_id != principal.account.id:
        raise NotFound("authenticated domain not found", "domain_id")
    return domain


async def _announce(queue: Queue, account_id: str) -> None:
    """Every process reads the account's sending domains again."""
    await signals.announce_via(queue.pool, signals.DOMAINS, account_id)


def _domain_name(name: str, bounce_label: str) -> str:
    """The domain in A-label form; 400 unless it is a host name of two labels or more whose
    bounce domain stays within DNS's 253 characters (RFC 1035 §2.3.4)."""
    try:
        ascii_name = service.normalize_domain_name(name)
    except ValueError as exc:
        raise BadRequest(f"{name!r} is not a valid domain", "domain") from exc
    labels = ascii_name.split(".")
    too_long = len(ascii_name) + len(bounce_label) + 1 > MAX_NAME
    if len(labels) < 2 or too_long or not all(LABEL.match(label) for label in labels):
        raise BadRequest(f"{name!r} is not a valid domain", "domain")
    return ascii_name


def _checked(body: SgDomainCreate) -> tuple[str, str, str | None]:
    """The domain, bounce label and DKIM selector asked for; 400 when they are no DNS names."""
    label = (body.subdomain or service.BOUNCE_LABEL).lower()
    if not LABEL.match(label):
        raise BadRequest("subdomain must be one DNS label (letters, digits, hyphens)", "subdomain")
    name = _domain_name(body.domain, label)
    selector = body.custom_dkim_selector
    if selector is not None and not SELECTOR.match(selector.lower()):
        raise BadRequest(
            "custom_dkim_selector must be three letters or numbers", "custom_dkim_selector"
        )
    return name, label, selector.lower() if selector else None


@router.post(
    "/v3/whitelabel/domains",
    status_code=201,
    response_model=SgDomain,
    responses=errors(400, 401, 403),
)
async def sg_create_domain(
    body: SgDomainCreate,
    principal: DomainsCreator,
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
) -> SgDomain:
    """Add a sending domain with a new DKIM key; the answer lists the records to publish."""
    name, label, selector = _checked(body)
    try:
        domain = await service.add_domain(
            session,
            account=principal.account,
            name=name,
            secret_key=settings.secret_key_bytes(),
            bounce_label=label,
            selector=selector,
        )
    except service.DomainExistsError as exc:
        raise BadRequest(f"{exc} is already an authenticated domain", "domain") from exc
    view = _view(domain, principal, settings)
    await session.commit()
    await _announce(queue, principal.account.id)
    return view


@router.get(
    "/v3/whitelabel/domains", response_model=list[SgDomain], responses=errors(400, 401, 403)
)
async def sg_list_domains(
    principal: DomainsReader,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=0, le=10000)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    domain: Annotated[str | None, Query(description="Only domains containing this.")] = None,
) -> list[SgDomain]:
    """The account's domains by name, `offset` and `limit` paging as SendGrid's."""
    found = await service.list_domains(session, account_id=principal.account.id)
    if domain:
        found = [row for row in found if domain.lower() in row.name]
    page = found[offset:] if limit is None else found[offset : offset + limit]
    return [_view(row, principal, settings) for row in page]


@router.get(
    "/v3/whitelabel/domains/{domain_id}", response_model=SgDomain, responses=errors(401, 403, 404)
)
async def sg_get_domain(
    domain_id: str, principal: DomainsReader, session: SessionDep, settings: SettingsDep
) -> SgDomain:
    """One domain with its records."""
    return _view(await _domain(session, principal, domain_id), principal, settings)


@router.delete(
    "/v3/whitelabel/domains/{domain_id}", status_code=204, responses=errors(401, 403, 404, 409)
)
async def sg_delete_domain(
    domain_id: str, principal: DomainsDeleter, session: SessionDep, queue: QueueDep
) -> Response:
    """Remove a domain: mail from it is no longer signed (nor sent, while verified domains
    are required). 409 while messages sent from it are kept."""
    domain = await _domain(session, principal, domain_id)
    try:
        await service.delete_domain(session, domain=domain)
    except service.DomainInUseError as exc:
        raise Conflict(
            f"messages sent from {exc} are still kept; delete the domain once retention "
            "has removed them",
            "domain_id",
        ) from exc
    await session.commit()
    await _announce(queue, principal.account.id)
    return Response(status_code=204)


def _results(domain: Domain, report: DomainReport) -> dict[str, SgRecordResult]:
    """Each record's verdict, by SendGrid's name."""
    results: dict[str, SgRecordResult] = {}
    for key, check in _by_name(report.records, domain.dkim_selector).items():
        valid = check.status is RecordStatus.VALID
        results[key] = SgRecordResult(valid=valid, reason=None if valid else check.detail)
    return results


@router.post(
    "/v3/whitelabel/domains/{domain_id}/validate",
    response_model=SgValidation,
    responses=errors(401, 403, 404),
)
async def sg_validate_domain(
    domain_id: str,
    principal: DomainsUpdater,
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
) -> SgValidation:
    """Check every record now (no cached answers); the domain is valid while the DKIM
    record it signs with is published."""
    domain = await _domain(session, principal, domain_id)
    resolver = make_resolver(settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds())
    report = await verification.verify(
        session,
        resolver=resolver,
        domain=domain,
        context=await verification.check_context(settings, resolver),
        grace=settings.dkim_rotation_grace,
    )
    await session.commit()
    await _announce(queue, principal.account.id)
    return SgValidation(
        id=domain.id, valid=report.verified, validation_results=_results(domain, report)
    )
