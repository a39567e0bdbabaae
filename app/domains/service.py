"""Sending domains: creation with a DKIM key, DNS records to publish, verification, lookup."""

from __future__ import annotations

from dataclasses import dataclass

import dns.asyncresolver
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.core import cache, clock
from app.core.encryption import decrypt, encrypt
from app.core.signals import DOMAINS
from app.delivery.idn import ascii_domain
from app.delivery.resolver import DnsTemporaryError, lookup
from app.delivery.signing import (
    DkimKey,
    generate_ed25519_key,
    generate_rsa_key,
    public_key_record,
)
from app.domains.cache import sending_domains
from app.domains.models import Domain

DKIM_PURPOSE = "dkim-private-key"


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


def dns_records(domain: Domain, *, hostname: str) -> list[DnsRecord]:
    """Every record to publish for a domain: DKIM, SPF and a DMARC suggestion, and the
    bounce domain's MX (bounces come back to `columba inbound` on this host) and SPF (the
    VERP MAIL FROM is on the bounce domain, so SPF is checked there: RFC 7208 §2.4)."""
    dkim = [DnsRecord("TXT", dkim_record_name(domain), domain.dkim_public_record, "DKIM (RSA)")]
    if domain.ed25519_selector and domain.ed25519_public_record:
        name = dkim_record_name(domain, domain.ed25519_selector)
        dkim.append(DnsRecord("TXT", name, domain.ed25519_public_record, "DKIM (Ed25519)"))
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
            "MX", domain.bounce_domain, f"10 {hostname}.", "Bounce domain: where bounces return"
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
) -> Domain:
    """A new sending domain with a fresh RSA-2048 DKIM key (and, when asked, an Ed25519 key
    for dual signing, RFC 8463), encrypted at rest."""
    name = normalize_domain_name(name)
    existing = await get_domain(session, account_id=account.id, name=name)
    if existing is not None:
        raise DomainExistsError(name)
    private_pem = generate_rsa_key()
    domain = Domain(
        account_id=account.id,
        name=name,
        dkim_selector=dkim_selector(),
        dkim_private_key=encrypt(secret_key, private_pem, purpose=DKIM_PURPOSE),
        dkim_public_record=public_key_record(private_pem),
        bounce_domain=f"bounces.{name}",
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
        return await sending_domains.lookup(account_id, email_domain, load)
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


def _public_key(record: str) -> str:
    """The p= value of a DKIM record, whitespace removed."""
    tags = dict(part.strip().partition("=")[::2] for part in record.split(";") if "=" in part)
    return "".join(tags.get("p", "").split())


async def check_dkim_published(
    resolver: dns.asyncresolver.Resolver, domain: Domain
) -> tuple[bool, str]:
    """Whether DNS serves the domain's DKIM key, and what was found."""
    try:
        texts = await lookup(resolver, dkim_record_name(domain), "TXT")
    except DnsTemporaryError as exc:
        return False, f"DNS lookup failed: {exc}"
    values = ["".join(part.strip('"') for part in text.split('" "')) for text in texts or []]
    expected = _public_key(domain.dkim_public_record)
    if any(_public_key(value) == expected for value in values):
        return True, "DKIM record found"
    return False, f"no matching DKIM TXT record at {dkim_record_name(domain)}"


async def verify_domain(
    session: AsyncSession, *, resolver: dns.asyncresolver.Resolver, domain: Domain
) -> tuple[bool, str]:
    """Mark the domain verified when its DKIM record is published."""
    ok, detail = await check_dkim_published(resolver, domain)
    if ok and domain.verified_at is None:
        domain.verified_at = clock.now()
        await session.flush()
        cache.invalidate(DOMAINS, domain.account_id)
    return ok, detail
