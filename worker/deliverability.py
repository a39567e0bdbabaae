"""Deliverability jobs (issue 16): re-verify domains and move DKIM rotations on, add the
TLS-RPT counters to the database, send yesterday's TLS reports."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from app.core import clock
from app.delivery.outbound import deliver
from app.delivery.signing import DkimSigner
from app.delivery.smtp import Envelope
from app.domains import rotation, verification
from app.domains.checks import CheckContext
from app.domains.models import Domain
from app.domains.service import candidate_names, dkim_keys
from app.tlspolicy.reports import Reporter, send_reports
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def _runtime(ctx: dict[str, Any]) -> Runtime:
    runtime: Runtime = ctx["runtime"]
    return runtime


async def reverify_domains(ctx: dict[str, Any]) -> int:
    """Check the domains not checked for DOMAIN_CHECK_INTERVAL (and those in a rotation),
    one transaction each; start rotations of keys older than DKIM_ROTATE_AFTER."""
    runtime = _runtime(ctx)
    settings = runtime.settings
    async with runtime.db.session() as session:
        due = await verification.due_domain_ids(session, interval=settings.domain_check_interval)
    context = await verification.check_context(settings, runtime.resolver)
    for domain_id in due:
        try:
            await _reverify(runtime, domain_id, context)
        except Exception:  # one domain's trouble must not keep the others unchecked
            log.exception("checking domain %s failed", domain_id)
    return len(due)


async def _reverify(runtime: Runtime, domain_id: str, context: CheckContext) -> None:
    """Check one domain (rotating its key first when it is due), in its own transaction."""
    settings = runtime.settings
    async with runtime.db.session() as session:
        domain = await session.get(Domain, domain_id)
        if domain is None:
            return
        if rotation.due_for_rotation(domain, rotate_after=settings.dkim_rotate_after):
            await _rotate_by_age(session, domain, settings.secret_key_bytes())
        await verification.verify(
            session,
            resolver=runtime.resolver,
            domain=domain,
            context=context,
            grace=settings.dkim_rotation_grace,
        )
        await session.commit()


async def _rotate_by_age(session: Any, domain: Domain, secret_key: bytes) -> None:
    """Start a rotation unless one is under way."""
    try:
        pending = await rotation.start_rotation(session, domain=domain, secret_key=secret_key)
    except rotation.RotationInProgress:
        return
    selectors = ", ".join(key.selector for key in pending)
    log.warning(
        "domain %s: DKIM key due for rotation; publish selector(s) %s", domain.name, selectors
    )


async def flush_tls_counts(ctx: dict[str, Any]) -> int:
    """Add this process's TLS-RPT counters to the database."""
    return await _runtime(ctx).flush_tls_counts()


async def send_tls_reports(ctx: dict[str, Any]) -> int:
    """Send yesterday's TLS reports (RFC 8460) to every policy domain that asks for them."""
    runtime = _runtime(ctx)
    settings = runtime.settings
    if not settings.tls_rpt:
        return 0
    await flush_tls_counts(ctx)
    sender = settings.tls_rpt_from or f"tls-reports@{settings.hostname}"
    reporter = Reporter(
        organization=settings.hostname,
        submitter=settings.hostname,
        contact=sender,
        resolver=runtime.resolver,
        ca_file=str(settings.tls_ca_file) if settings.tls_ca_file else None,
        allow_private=settings.allow_private_destinations,
    )
    day = (clock.now() - timedelta(days=1)).date()

    async def send_mail(to: str, message: bytes) -> str | None:
        return await mail_report(runtime, sender, to, message)

    async with runtime.db.session() as session:
        sent = await send_reports(session, reporter, day, send_mail, sender)
        await session.commit()
    return len(sent)


async def mail_report(runtime: Runtime, sender: str, to: str, message: bytes) -> str | None:
    """Deliver one report through the delivery path (MX, TLS policy, pooled connections),
    DKIM-signed when a sending domain covers the sender; the error, or None."""
    message = await _signed(runtime, sender, message)
    domain = to.rpartition("@")[2]
    destination = await runtime.destination(domain)
    requirement, _ = await runtime.tls_requirement(domain)
    envelope = Envelope(mail_from=sender, recipients=(to,), data=message)
    result = await deliver(
        destination, envelope, runtime.pool, runtime.throttle_key(destination), requirement
    )
    reply = result.replies.get(to)
    return None if reply is not None and reply.code in (250, 251) else f"mailto:{to}: {reply}"


async def _signed(runtime: Runtime, sender: str, message: bytes) -> bytes:
    """The message with a DKIM signature of the sending domain covering the sender's."""
    names = candidate_names(sender.rpartition("@")[2].lower())
    async with runtime.db.session() as session:
        query = select(Domain).where(Domain.name.in_(names), Domain.verified_at.is_not(None))
        domains = {d.name: d for d in (await session.execute(query)).scalars()}
    domain = next((domains[name] for name in names if name in domains), None)
    if domain is None:
        return message
    signer = DkimSigner(dkim_keys(domain, secret_key=runtime.settings.secret_key_bytes()))
    return signer.sign(message, timestamp=int(clock.now().timestamp())) + message
