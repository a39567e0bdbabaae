"""Sending domains: creation with a DKIM key, DNS records to publish, verification, lookup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core import cache, clock
from app.core.encryption import decrypt, encrypt
from app.core.signals import DOMAINS
from app.delivery.idn import ascii_domain
from app.delivery.signing import (
    DkimKey,
    generate_ed25519_key,
    generate_rsa_key,
    public_key_record,
)
from app.domains import rotation, verification
from app.domains.cache import sending_domains
from app.domains.checks import CheckContext
from app.domains.models import Domain, DomainKey, KeyState
from app.messages.models import Message

DKIM_PURPOSE = rotation.DKIM_PURPOSE
BOUNCE_LABEL = "bounces"


class DomainInUseError(Exception):
    """Messages sent from the domain are still kept: it cannot be removed yet."""


class DomainExistsError(Exception):
    """The account already has this domain."""


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """A record the domain owner publishes."""

    type: str
    name: str
    value: str
    purpose: str


def dkim_selector() -> str:
    """A selector naming the key's month, so a rotated key gets a new name."""
    return "cb" + clock.now().strftime("%Y%m")


def dkim_record_name(domain: Domain, selector: str | None = None) -> str:
    """Where a DKIM public key is published (RFC 6376 §3.6.2.1)."""
    return f"{selector or domain.dkim_selector}._domainkey.{domain.name}"


def dns_records(
    domain: Domain,
    *,
    hostname: str,
    keys: Sequence[DomainKey] = (),
    inbound_host: str | None = None,
) -> list[DnsRecord]:
    """Every record to publish for a domain: DKIM (the signing keys, and during a rotation
    the next and the previous ones), SPF and a DMARC suggestion, and the bounce domain's MX
    (bounces come back to `columba inbound`) and SPF (the VERP MAIL FROM is on the bounce
    domain, so SPF is checked there: RFC 7208 §2.4)."""
    inbound_host = inbound_host or hostname
    dkim = [DnsRecord("TXT", dkim_record_name(domain), domain.dkim_public_record, "DKIM (RSA)")]
    if domain.ed25519_selector and domain.ed25519_public_record:
        name = dkim_record_name(domain, domain.ed25519_selector)
        dkim.append(DnsRecord("TXT", name, domain.ed25519_public_record, "DKIM (Ed25519)"))
    for key in keys:
        name = dkim_record_name(domain, key.selector)
        if key.state == KeyState.PENDING:
            dkim.append(DnsRecord("TXT", name, key.public_record, "DKIM (next key: publish)"))
        elif key.state == KeyState.RETIRING and key.retire_at is not None:
            until = key.retire_at.date().isoformat()
            purpose = f"DKIM (previous key: keep until {until})"
            dkim.append(DnsRecord("TXT", name, key.public_record, purpose))
    return [
        *dkim,
        DnsRecord(
            "TXT", domain.name, f"v=spf1 a:{hostname} ~all", "SPF (merge into an existing one)"
        ),
        DnsRecord(
            "TXT",
            f"_dmarc.{domain.name}",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain.name}",
            "DMARC (start with p=none, tighten once reports are clean)",
        ),
        DnsRecord(
            "MX", domain.bounce_domain, f"10 {inbound_host}.", "Bounce domain: where bounces return"
        ),
        DnsRecord(
            "TXT", domain.bounce_domain, f"v=spf1 a:{hostname} -all", "SPF of the bounce domain"
        ),
    ]


def normalize_domain_name(name: str) -> str:
    """Lower-case, no trailing dot, IDNA (punycode) for non-ASCII names."""
    return ascii_domain(name.strip().rstrip("."))


async def add_domain(
    session: AsyncSession,
    *,
    account: Account,
    name: str,
    secret_key: bytes,
    ed25519: bool = False,
    bounce_label: str = BOUNCE_LABEL,
    selector: str | None = None,
) -> Domain:
    """A new sending domain with a fresh RSA-2048 DKIM key (and, when asked, an Ed25519 key
    for dual signing, RFC 8463), encrypted at rest; bounces return to `bounce_label`.name."""
    name = normalize_domain_name(name)
    existing = await get_domain(session, account_id=account.id, name=name)
    if existing is not None:
        raise DomainExistsError(name)
    private_pem = generate_rsa_key()
    domain = Domain(
        account_id=account.id,
        name=name,
        dkim_selector=selector or dkim_selector(),
        dkim_private_key=encrypt(secret_key, private_pem, purpose=DKIM_PURPOSE),
        dkim_public_record=public_key_record(private_pem),
        bounce_domain=f"{bounce_label}.{name}",
        dkim_activated_at=clock.now(),
    )
    if ed25519:
        ed_pem = generate_ed25519_key()
        domain.ed25519_selector = dkim_selector() + "e"
        domain.ed25519_private_key = encrypt(secret_key, ed_pem, purpose=DKIM_PURPOSE)
        domain.ed25519_public_record = public_key_record(ed_pem)
    session.add(domain)
    await session.flush()
    # A more specific domain may now cover addresses a parent covered.
    cache.invalidate(DOMAINS, account.id)
    return domain


async def get_domain(session: AsyncSession, *, account_id: str, name: str) -> Domain | None:
    """The account's domain called `name`."""
    query = select(Domain).where(Domain.account_id == account_id, Domain.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def list_domains(session: AsyncSession, *, account_id: str | None = None) -> list[Domain]:
    """Domains by name, optionally of one account."""
    query = select(Domain).order_by(Domain.name)
    if account_id is not None:
        query = query.where(Domain.account_id == account_id)
    return list((await session.execute(query)).scalars())


async def delete_domain(session: AsyncSession, *, domain: Domain) -> None:
    """Remove a domain with its DKIM keys; DomainInUseError while messages sent from it are
    kept (they name it; retention removes them in time)."""
    used = await session.scalar(select(Message.id).where(Message.domain_id == domain.id).limit(1))
    if used is not None:
        raise DomainInUseError(domain.name)
    await session.delete(domain)
    await session.flush()
    cache.invalidate(DOMAINS, domain.account_id)


def candidate_names(email_domain: str) -> list[str]:
    """The domain and its parents, most specific first: mail from news.example.com may be
    sent (and DKIM-signed, aligned under DMARC's relaxed mode) by example.com."""
    labels = email_domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


class _Unsettled(Exception):
    """The domain was found among the session's own uncommitted changes."""

    def __init__(self, domain: Domain) -> None:
        super().__init__(domain.name)
        self.domain = domain


async def sending_domain_for(
    session: AsyncSession, *, account_id: str, email_domain: str
) -> Domain | None:
    """The account's domain that covers the From domain, the most specific one.

    Found domains are cached for a second (app/domains/cache.py) and come back detached: a
    caller reads them, never changes them."""

    async def load() -> Domain | None:
        names = candidate_names(normalize_domain_name(email_domain))
        query = select(Domain).where(Domain.account_id == account_id, Domain.name.in_(names))
        found = {domain.name: domain for domain in (await session.execute(query)).scalars()}
        domain = next((found[name] for name in names if name in found), None)
        if domain is not None and (domain in session.dirty or domain in session.new):
            raise _Unsettled(domain)  # written but not committed: not for other requests
        if domain is not None:
            session.expunge(domain)
        return domain

    try:
        return await sending_domains.lookup((account_id, email_domain), load)
    except _Unsettled as unsettled:
        return unsettled.domain


def dkim_keys(domain: Domain, *, secret_key: bytes) -> list[DkimKey]:
    """The domain's decrypted signing keys: RSA, then Ed25519 when it has one."""
    pem = decrypt(secret_key, domain.dkim_private_key, purpose=DKIM_PURPOSE)
    keys = [DkimKey(domain=domain.name, selector=domain.dkim_selector, private_key_pem=pem)]
    if domain.ed25519_selector and domain.ed25519_private_key:
        ed_pem = decrypt(secret_key, domain.ed25519_private_key, purpose=DKIM_PURPOSE)
        keys.append(
            DkimKey(domain.name, domain.ed25519_selector, ed_pem, algorithm="ed25519-sha256")
        )
    return keys


async def verify_domain(
    session: AsyncSession,
    *,
    resolver: dns.asyncresolver.Resolver,
    domain: Domain,
    context: CheckContext | None = None,
) -> tuple[bool, str]:
    """Check the domain's records (app.domains.verification) and say whether it is verified;
    without a context only the DKIM verdict is meaningful."""
    context = context or CheckContext(hostname="localhost", inbound_host="localhost")
    report = await verification.verify(session, resolver=resolver, domain=domain, context=context)
    dkim = [r for r in report.records if r.required]
    return report.verified, "; ".join(r.detail for r in dkim)
