"""Verifying a domain: check its records, move a DKIM rotation on, and turn the domain
verified or unverified with an event (and a metric) when that changes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import dns.asyncresolver
from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import cache, clock
from app.core.config import Settings
from app.core.signals import DOMAINS
from app.domains import rotation
from app.domains.checks import (
    CheckContext,
    DomainReport,
    RecordStatus,
    check_domain,
    fresh_resolver,
    sending_addresses,
)
from app.domains.models import Domain, DomainKey, KeyState
from app.events import service as events
from app.events.models import EventType
from app.observability.metrics import DOMAIN_CHECKS, DOMAIN_VERIFICATION_LOST

log = logging.getLogger(__name__)

CHECKS = DOMAIN_CHECKS  # the counters live with every other metric
LOST = DOMAIN_VERIFICATION_LOST


async def check_context(settings: Settings, resolver: dns.asyncresolver.Resolver) -> CheckContext:
    """Where our mail comes from (SENDING_IPS, else HOSTNAME's addresses) and where bounces
    should go (INBOUND_HOSTNAME, else HOSTNAME)."""
    ips = await sending_addresses(resolver, settings.hostname, settings.sending_ips)
    inbound = settings.inbound_hostname or settings.hostname
    return CheckContext(hostname=settings.hostname, inbound_host=inbound, sending_ips=ips)


async def verify(
    session: AsyncSession,
    *,
    resolver: dns.asyncresolver.Resolver,
    domain: Domain,
    context: CheckContext,
    grace: timedelta = timedelta(days=7),
) -> DomainReport:
    """Check every record without cached answers; promote a pending DKIM key whose records
    all verify, retire keys past their grace, and record the verdict on the domain."""
    uncached = fresh_resolver(resolver)
    keys = await rotation.keys_of(session, domain.id)
    report = await check_domain(uncached, domain, keys, context)
    if _pending_verified(keys, report):
        promoted = rotation.promote(domain, keys, grace=grace)
        await _record(session, domain, EventType.DKIM_ROTATED, selectors=promoted, report=None)
        report = await check_domain(uncached, domain, keys, context)
    rotation.retire_due(keys)
    await _apply(session, domain, report)
    # This process's sends see the verdict at once; other processes within AUTH_CACHE_TTL,
    # or at once when the caller announces it (the CLI does).
    cache.invalidate(DOMAINS, domain.account_id)
    return report


def _pending_verified(keys: Sequence[DomainKey], report: DomainReport) -> bool:
    """Whether there are pending keys and every one of their records is valid."""
    pending = {key.selector for key in keys if key.state == KeyState.PENDING}
    valid = {
        r.selector for r in report.records if r.kind == "dkim" and r.status is RecordStatus.VALID
    }
    return bool(pending) and pending <= valid


async def _apply(session: AsyncSession, domain: Domain, report: DomainReport) -> None:
    """Store the report; flip the verified state when the required records say so. A
    temporary DNS failure changes nothing: a SERVFAIL must not stop anyone's mail. Events
    mark changes: a domain verified at its first check has nothing to announce."""
    now = clock.now()
    changed_after_check = domain.last_checked_at is not None
    domain.last_checked_at = now
    domain.last_check = report.to_json()
    required = [r for r in report.records if r.required]
    if any(r.status is RecordStatus.ERROR for r in required):
        CHECKS.labels("dns_error").inc()
    elif report.verified:
        CHECKS.labels("verified").inc()
        if domain.verified_at is None:
            domain.verified_at = now
            if changed_after_check:
                await _record(session, domain, EventType.DOMAIN_VERIFIED, report=report)
    else:
        CHECKS.labels("failed").inc()
        if domain.verified_at is not None:
            domain.verified_at = None
            LOST.inc()
            log.warning("domain %s is no longer verified: %s", domain.name, _failures(report))
            await _record(session, domain, EventType.DOMAIN_FAILED, report=report)
    await session.flush()


def _failures(report: DomainReport) -> str:
    """The failed records, one phrase each."""
    return "; ".join(f"{r.name} {r.type} {r.status}: {r.detail}" for r in report.failed())


async def _record(
    session: AsyncSession,
    domain: Domain,
    kind: EventType,
    *,
    report: DomainReport | None,
    selectors: Sequence[DomainKey] = (),
) -> None:
    """An account event about the domain, in the caller's transaction."""
    data: dict[str, object] = {"domain_id": domain.id, "domain": domain.name}
    if report is not None:
        data["failed"] = [
            {"name": r.name, "type": r.type, "status": str(r.status), "detail": r.detail}
            for r in report.failed()
        ]
    if selectors:
        data["selector"] = domain.dkim_selector
        data["previous_selectors"] = [key.selector for key in selectors]
    await events.record(
        session, [events.NewEvent(account_id=domain.account_id, type=kind, data=data)]
    )


async def due_domain_ids(session: AsyncSession, *, interval: timedelta) -> list[str]:
    """Domains to check now: not checked within `interval`, or in the middle of a rotation
    (a pending key signs as soon as its record is found, a replaced one retires on time)."""
    now = clock.now()
    in_rotation = exists().where(
        DomainKey.domain_id == Domain.id,
        or_(
            DomainKey.state == KeyState.PENDING,
            (DomainKey.state == KeyState.RETIRING) & (DomainKey.retire_at <= now),
        ),
    )
    query = select(Domain.id).where(
        or_(Domain.last_checked_at.is_(None), Domain.last_checked_at <= now - interval, in_rotation)
    )
    return list((await session.execute(query.order_by(Domain.id))).scalars())
