"""Every DNS record a sending domain depends on, checked: DKIM (each selector), SPF of the
From and bounce domains, the bounce domain's MX, and DMARC with alignment. Each record is
valid, missing or wrong, with what was found and what is expected."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import dns.asyncresolver

from app.core import clock
from app.delivery.resolver import DnsTemporaryError, lookup, resolve_host
from app.domains import dmarc, spf
from app.domains.models import Domain, DomainKey, KeyState


class RecordStatus(StrEnum):
    """The verdict on one record."""

    VALID = "valid"
    MISSING = "missing"
    WRONG = "wrong"
    ERROR = "error"  # DNS failed temporarily: nothing is concluded


@dataclass(frozen=True, slots=True)
class RecordCheck:
    """One record: where, what we expect, what DNS has, and the verdict."""

    kind: str  # dkim | spf | bounce_mx | bounce_spf | dmarc
    type: str
    name: str
    status: RecordStatus
    expected: str
    found: list[str]
    detail: str
    required: bool = False  # failing it unverifies the domain
    selector: str | None = None


@dataclass(frozen=True, slots=True)
class CheckContext:
    """Where our mail comes from and where its bounces go."""

    hostname: str
    inbound_host: str
    sending_ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DomainReport:
    """The checks of one domain at one time."""

    domain: str
    checked_at: datetime
    records: list[RecordCheck] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """Every required record valid (the DKIM keys that sign)."""
        return all(r.status is RecordStatus.VALID for r in self.records if r.required)

    def failed(self) -> list[RecordCheck]:
        """Records that are not valid."""
        return [r for r in self.records if r.status is not RecordStatus.VALID]

    def to_json(self) -> dict[str, Any]:
        """The report as stored on the domain and answered by the API."""
        return {
            "domain": self.domain,
            "checked_at": self.checked_at.isoformat(),
            "verified": self.verified,
            "records": [asdict(record) for record in self.records],
        }


def fresh_resolver(resolver: dns.asyncresolver.Resolver) -> dns.asyncresolver.Resolver:
    """A copy of the resolver without a cache: a verification must see DNS as it is now."""
    copy = dns.asyncresolver.Resolver(configure=False)
    copy.nameservers = resolver.nameservers
    copy.port = resolver.port
    copy.timeout = resolver.timeout
    copy.lifetime = resolver.lifetime
    copy.cache = None
    return copy


async def sending_addresses(
    resolver: dns.asyncresolver.Resolver, hostname: str, configured: Sequence[str]
) -> tuple[str, ...]:
    """The configured sending IPs, else the addresses the EHLO name resolves to."""
    if configured:
        return tuple(configured)
    return tuple(await resolve_host(resolver, hostname))


async def check_domain(
    resolver: dns.asyncresolver.Resolver,
    domain: Domain,
    keys: Sequence[DomainKey],
    context: CheckContext,
) -> DomainReport:
    """Check every record of the domain, concurrently, through `resolver` as given."""
    checks = [
        *(check_dkim(resolver, domain, key) for key in _signing_keys(domain, keys)),
        check_spf(resolver, "spf", domain.name, context, softfail_ok=True),
        check_bounce_mx(resolver, domain, context),
        check_spf(resolver, "bounce_spf", domain.bounce_domain, context, softfail_ok=False),
        check_dmarc(resolver, domain),
    ]
    records = await asyncio.gather(*checks)
    return DomainReport(domain.name, clock.now(), list(records))


@dataclass(frozen=True, slots=True)
class _Key:
    """A DKIM key to look for: selector, record, and its place in a rotation."""

    selector: str
    record: str
    label: str
    required: bool


def _signing_keys(domain: Domain, keys: Sequence[DomainKey]) -> list[_Key]:
    """The keys that sign (required), the next ones and those still published."""
    found = [_Key(domain.dkim_selector, domain.dkim_public_record, "DKIM (RSA)", True)]
    if domain.ed25519_selector and domain.ed25519_public_record:
        found.append(
            _Key(domain.ed25519_selector, domain.ed25519_public_record, "DKIM (Ed25519)", True)
        )
    for key in keys:
        if key.state == KeyState.PENDING:
            found.append(_Key(key.selector, key.public_record, "DKIM (next key)", False))
        elif key.state == KeyState.RETIRING:
            until = key.retire_at.date().isoformat() if key.retire_at else "its retirement"
            label = f"DKIM (previous key, keep until {until})"
            found.append(_Key(key.selector, key.public_record, label, False))
    return found


async def check_dkim(
    resolver: dns.asyncresolver.Resolver, domain: Domain, key: _Key
) -> RecordCheck:
    """The selector's TXT record publishes our public key (RFC 6376 §3.6.2.1)."""
    name = f"{key.selector}._domainkey.{domain.name}"
    base: dict[str, Any] = {"kind": "dkim", "type": "TXT", "name": name, "expected": key.record}
    try:
        texts = await lookup(resolver, name, "TXT")
    except DnsTemporaryError as exc:
        return _error(base, exc, key.required, key.selector)
    values = [spf.joined_txt(text) for text in texts or []]
    expected = dkim_public_key(key.record)
    if any(dkim_public_key(value) == expected for value in values):
        status, detail = RecordStatus.VALID, f"{key.label}: the published key matches"
    elif not values:
        status, detail = RecordStatus.MISSING, f"{key.label}: no TXT record at {name}"
    else:
        status, detail = RecordStatus.WRONG, f"{key.label}: the published key is not ours"
    return RecordCheck(
        **base, status=status, found=values, detail=detail, required=key.required,
        selector=key.selector,
    )  # fmt: skip


def dkim_public_key(record: str) -> str:
    """The p= value of a DKIM record, whitespace removed."""
    tags = dict(part.strip().partition("=")[::2] for part in record.split(";") if "=" in part)
    return "".join(tags.get("p", "").split())


async def check_spf(
    resolver: dns.asyncresolver.Resolver,
    kind: str,
    name: str,
    context: CheckContext,
    *,
    softfail_ok: bool,
) -> RecordCheck:
    """The SPF record passes every sending address within the look-up limit (RFC 7208)."""
    qualifier = "~all" if softfail_ok else "-all"
    base: dict[str, Any] = {"kind": kind, "type": "TXT", "name": name}
    base["expected"] = f"v=spf1 a:{context.hostname} {qualifier}"
    try:
        record = await spf.spf_record(resolver, name)
    except spf.TempError as exc:
        return _error(base, exc)
    except spf.PermError as exc:
        return RecordCheck(**base, status=RecordStatus.WRONG, found=[], detail=str(exc))
    if record is None:
        detail = "no SPF record: publish one that includes our addresses"
        return RecordCheck(**base, status=RecordStatus.MISSING, found=[], detail=detail)
    try:
        lookups = await spf.count_lookups(resolver, name)
    except spf.TempError as exc:
        return _error(base, exc)
    except spf.PermError as exc:
        return RecordCheck(**base, status=RecordStatus.WRONG, found=[record], detail=str(exc))
    if lookups > spf.LOOKUP_LIMIT:
        detail = (
            f"the record needs {lookups} DNS look-ups; past {spf.LOOKUP_LIMIT} it fails for "
            "every receiver (RFC 7208 §4.6.4): flatten includes"
        )
        return RecordCheck(**base, status=RecordStatus.WRONG, found=[record], detail=detail)
    return await _spf_verdict(resolver, base, name, record, lookups, context)


async def _spf_verdict(
    resolver: dns.asyncresolver.Resolver,
    base: dict[str, Any],
    name: str,
    record: str,
    lookups: int,
    context: CheckContext,
) -> RecordCheck:
    """Evaluate the record for each sending address."""
    if not context.sending_ips:
        detail = f"cannot tell: {context.hostname} resolves to no address (set SENDING_IPS)"
        return RecordCheck(**base, status=RecordStatus.ERROR, found=[record], detail=detail)
    results = [await spf.evaluate(resolver, name, ip) for ip in context.sending_ips]
    bad = [
        (ip, r) for ip, r in zip(context.sending_ips, results, strict=True) if r.result != "pass"
    ]
    if not bad:
        detail = f"passes for {', '.join(context.sending_ips)} ({lookups} DNS look-ups)"
        return RecordCheck(**base, status=RecordStatus.VALID, found=[record], detail=detail)
    status = RecordStatus.ERROR if bad[0][1].result == "temperror" else RecordStatus.WRONG
    detail = "; ".join(f"{ip}: {r.result}" + (f" ({r.error})" if r.error else "") for ip, r in bad)
    return RecordCheck(**base, status=status, found=[record], detail=detail)


async def check_bounce_mx(
    resolver: dns.asyncresolver.Resolver, domain: Domain, context: CheckContext
) -> RecordCheck:
    """The bounce domain's MX points at the inbound listener, so bounces come back."""
    base: dict[str, Any] = {
        "kind": "bounce_mx",
        "type": "MX",
        "name": domain.bounce_domain,
        "expected": f"10 {context.inbound_host}.",
    }
    try:
        texts = await lookup(resolver, domain.bounce_domain, "MX")
    except DnsTemporaryError as exc:
        return _error(base, exc)
    if not texts:
        detail = "no MX record: bounces and complaints cannot come back"
        return RecordCheck(**base, status=RecordStatus.MISSING, found=[], detail=detail)
    exchanges = [text.split()[-1].rstrip(".").lower() for text in texts]
    if context.inbound_host.lower() in exchanges or await _same_addresses(
        resolver, exchanges, context.inbound_host
    ):
        detail = "points at the inbound listener"
        return RecordCheck(**base, status=RecordStatus.VALID, found=texts, detail=detail)
    detail = f"points at {', '.join(exchanges)}, not at {context.inbound_host}"
    return RecordCheck(**base, status=RecordStatus.WRONG, found=texts, detail=detail)


async def _same_addresses(
    resolver: dns.asyncresolver.Resolver, exchanges: list[str], host: str
) -> bool:
    """Whether an exchange resolves to an address of `host` (a CNAME-like alias)."""
    ours = set(await resolve_host(resolver, host))
    for exchange in exchanges:
        if ours & set(await resolve_host(resolver, exchange)):
            return True
    return False


async def check_dmarc(resolver: dns.asyncresolver.Resolver, domain: Domain) -> RecordCheck:
    """A DMARC record is present and parses, and our DKIM or SPF aligns under it."""
    suggested = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain.name}"
    base: dict[str, Any] = {
        "kind": "dmarc",
        "type": "TXT",
        "name": f"_dmarc.{domain.name}",
        "expected": suggested,
    }
    try:
        found = await dmarc.find_record(resolver, domain.name)
    except DnsTemporaryError as exc:
        return _error(base, exc)
    if found is None:
        detail = "no DMARC record: Gmail and Yahoo require one of bulk senders"
        return RecordCheck(**base, status=RecordStatus.MISSING, found=[], detail=detail)
    record, where = found
    try:
        policy = dmarc.parse(record, where)
    except dmarc.DmarcSyntaxError as exc:
        return RecordCheck(**base, status=RecordStatus.WRONG, found=[record], detail=str(exc))
    return _alignment(base, domain, policy)


def _alignment(base: dict[str, Any], domain: Domain, policy: dmarc.DmarcPolicy) -> RecordCheck:
    """Whether mail From the domain would pass DMARC through DKIM or SPF alignment (§3.1)."""
    dkim_ok = dmarc.aligned(domain.name, domain.name, policy.adkim)
    spf_ok = dmarc.aligned(domain.name, domain.bounce_domain, policy.aspf)
    parts = [
        f"p={policy.policy} at {policy.published_at}",
        f"DKIM (d={domain.name}, adkim={policy.adkim}) "
        + ("aligns" if dkim_ok else "does not align"),
        f"SPF (MAIL FROM {domain.bounce_domain}, aspf={policy.aspf}) "
        + ("aligns" if spf_ok else "does not align"),
    ]
    if policy.policy == "none":
        parts.append("p=none only monitors: tighten to quarantine once reports are clean")
    status = RecordStatus.VALID if dkim_ok or spf_ok else RecordStatus.WRONG
    return RecordCheck(**base, status=status, found=[policy.record], detail="; ".join(parts))


def _error(
    base: dict[str, Any], exc: Exception, required: bool = False, selector: str | None = None
) -> RecordCheck:
    """A record whose look-up failed temporarily."""
    return RecordCheck(
        **base, status=RecordStatus.ERROR, found=[], detail=f"DNS look-up failed: {exc}",
        required=required, selector=selector,
    )  # fmt: skip
