"""HTTP: `/v1/domains`: list and show sending domains, verify their DNS records, rotate DKIM."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import Conflict, NotFound
from app.delivery.resolver import make_resolver
from app.deps import DomainsReader, DomainsUpdater, SessionDep, SettingsDep
from app.domains import rotation, service, verification
from app.domains.models import Domain
from app.domains.schemas import DomainList, DomainView, VerificationView
from app.openapi import errors
from app.routing import StrictJsonRoute

router = APIRouter(tags=["domains"], route_class=StrictJsonRoute)


async def _domain(session: AsyncSession, account_id: str, domain_id: str) -> Domain:
    """The account's domain, or 404 (another account's domain is not found either)."""
    domain = await session.get(Domain, domain_id)
    if domain is None or domain.account_id != account_id:
        raise NotFound(f"no domain {domain_id}", "domain_id")
    return domain


async def _view(session: AsyncSession, domain: Domain, settings: Settings) -> DomainView:
    """The domain with its keys in rotation and the records to publish."""
    keys = await rotation.keys_of(session, domain.id)
    records = service.dns_records(
        domain, hostname=settings.hostname, keys=keys, inbound_host=settings.inbound_hostname
    )
    return DomainView.of(domain, keys, records)


@router.get("/v1/domains", response_model=DomainList, responses=errors(400, 401, 403))
async def list_domains(
    principal: DomainsReader, session: SessionDep, settings: SettingsDep
) -> DomainList:
    """The account's sending domains, with their state and the records to publish."""
    found = await service.list_domains(session, account_id=principal.account.id)
    return DomainList(domains=[await _view(session, domain, settings) for domain in found])


@router.get(
    "/v1/domains/{domain_id}", response_model=DomainView, responses=errors(400, 401, 403, 404)
)
async def get_domain(
    domain_id: str, principal: DomainsReader, session: SessionDep, settings: SettingsDep
) -> DomainView:
    """One domain, with its last verification."""
    domain = await _domain(session, principal.account.id, domain_id)
    return await _view(session, domain, settings)


@router.post(
    "/v1/domains/{domain_id}/verify",
    response_model=VerificationView,
    responses=errors(400, 401, 403, 404),
)
async def verify_domain(
    domain_id: str, principal: DomainsUpdater, session: SessionDep, settings: SettingsDep
) -> VerificationView:
    """Check every DNS record now, without cached answers: each DKIM selector, SPF of the
    From and bounce domains (with the 10-look-up limit), the bounce MX, DMARC and alignment.
    The domain is verified while the DKIM records it signs with are published."""
    domain = await _domain(session, principal.account.id, domain_id)
    resolver = make_resolver(settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds())
    report = await verification.verify(
        session,
        resolver=resolver,
        domain=domain,
        context=await verification.check_context(settings, resolver),
        grace=settings.dkim_rotation_grace,
    )
    await session.commit()
    return VerificationView.of(report)


@router.post(
    "/v1/domains/{domain_id}/dkim/rotate",
    status_code=201,
    response_model=DomainView,
    responses=errors(400, 401, 403, 404, 409),
)
async def rotate_dkim(
    domain_id: str, principal: DomainsUpdater, session: SessionDep, settings: SettingsDep
) -> DomainView:
    """Generate the next DKIM key(s): publish the `pending` records, then verify. The new
    key signs once its record verifies; the old one stays published for the grace period."""
    domain = await _domain(session, principal.account.id, domain_id)
    try:
        await rotation.start_rotation(
            session, domain=domain, secret_key=settings.secret_key_bytes()
        )
    except rotation.RotationInProgress as exc:
        raise Conflict(
            f"{exc} already has a pending DKIM key: publish its record, then verify", "domain_id"
        ) from exc
    view = await _view(session, domain, settings)
    await session.commit()
    return view
