"""`columba doctor`: checks what a sender depends on and says what to fix. Forward-confirmed
reverse DNS of the sending IPs, DNS blocklists, outbound port 25, every domain's records, the
SMTP listener's certificate, and settings unsafe in production."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

import dns.asyncresolver
import dns.reversename
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.delivery.resolver import DnsTemporaryError, lookup, resolve_host
from app.domains import rotation, service
from app.domains.checks import (
    CheckContext,
    RecordCheck,
    RecordStatus,
    check_domain,
    fresh_resolver,
)
from app.domains.verification import check_context

CERT_FAIL_DAYS = 14  # a certificate this close to expiry fails the check
CERT_WARN_DAYS = 30


class Status(StrEnum):
    """How one finding stands."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the doctor's output, and what to do about it."""

    status: Status
    check: str
    message: str
    fix: str | None = None


def render(findings: Sequence[Finding]) -> list[str]:
    """The findings as printed: a status tag, the check, the message, then the fix."""
    lines = []
    for finding in findings:
        lines.append(f"[{finding.status.upper():>4}] {finding.check}: {finding.message}")
        if finding.fix:
            lines.append(f"       fix: {finding.fix}")
    return lines


async def examine(
    settings: Settings,
    db: Database,
    resolver: dns.asyncresolver.Resolver,
    *,
    offline: bool = False,
) -> list[Finding]:
    """Every check, in the order printed."""
    resolver = fresh_resolver(resolver)
    context = await check_context(settings, resolver)
    findings = [*unsafe_settings(settings)]
    findings += await reverse_dns(resolver, settings.hostname, context.sending_ips)
    if offline:
        findings.append(Finding(Status.SKIP, "dnsbl", "skipped (--offline)"))
        findings.append(Finding(Status.SKIP, "port 25", "skipped (--offline)"))
    else:
        findings += await blocklists(resolver, context.sending_ips, settings.dnsbl_zones)
        findings.append(await port25(resolver, settings.port25_probe))
    findings += await domain_records(db, resolver, context)
    findings += listener_certificate(settings.smtp_tls_cert, settings.smtp_tls_key, settings)
    return findings


def unsafe_settings(settings: Settings) -> list[Finding]:
    """Settings that are wrong or risky for production."""
    found = [Finding(Status.FAIL, "settings", problem) for problem in settings.problems()]
    risky = [
        (
            settings.allow_private_destinations,
            Status.FAIL,
            "ALLOW_PRIVATE_DESTINATIONS is on: MX and webhook connections may reach private "
            "addresses (SSRF)",
            "unset COLUMBA_ALLOW_PRIVATE_DESTINATIONS",
        ),
        (
            not settings.require_verified_domains,
            Status.WARN,
            "REQUIRE_VERIFIED_DOMAINS is off: mail from unverified domains is sent unsigned "
            "by DNS and lands in spam",
            "set COLUMBA_REQUIRE_VERIFIED_DOMAINS=true",
        ),
        (
            settings.is_sqlite and not settings.dev_mode,
            Status.WARN,
            "the database is SQLite: one machine only, no replicas",
            "use PostgreSQL (COLUMBA_DATABASE_URL=postgresql+asyncpg://...)",
        ),
        (
            settings.redis_url is None and not settings.dev_mode,
            Status.WARN,
            "REDIS_URL is unset: an embedded Redis serves only this machine",
            "set COLUMBA_REDIS_URL",
        ),
        (
            settings.public_url.startswith("http://"),
            Status.WARN,
            f"PUBLIC_URL {settings.public_url} is plain HTTP: unsubscribe and tracking links "
            "must be HTTPS (RFC 8058)",
            "serve the API over HTTPS and set COLUMBA_PUBLIC_URL=https://...",
        ),
        (
            not settings.mta_sts,
            Status.WARN,
            "MTA-STS is off: receivers' TLS policies are not honoured",
            "unset COLUMBA_MTA_STS",
        ),
    ]
    found += [Finding(status, "settings", text, fix) for bad, status, text, fix in risky if bad]
    if not found:
        found.append(Finding(Status.OK, "settings", "nothing unsafe for production"))
    return found


async def reverse_dns(
    resolver: dns.asyncresolver.Resolver, hostname: str, sending_ips: Sequence[str]
) -> list[Finding]:
    """The EHLO name resolves to each sending IP, and each IP's PTR names a host that
    resolves back to it (forward-confirmed reverse DNS, CHECKLIST 37)."""
    forward = set(await resolve_host(resolver, hostname))
    if not forward:
        fix = f"publish an A record: {hostname}. IN A <your sending IP>"
        return [Finding(Status.FAIL, "ehlo", f"{hostname} resolves to no address", fix)]
    if not sending_ips:
        return [Finding(Status.FAIL, "ehlo", "no sending IP known", "set COLUMBA_SENDING_IPS")]
    findings = []
    for ip in sending_ips:
        if ip in forward:
            findings.append(Finding(Status.OK, "ehlo", f"{hostname} resolves to {ip}"))
        else:
            fix = f"point {hostname} at {ip}, or set COLUMBA_HOSTNAME to the name that is"
            text = f"{hostname} resolves to {', '.join(sorted(forward))}, not to {ip}"
            findings.append(Finding(Status.FAIL, "ehlo", text, fix))
        findings.append(await _ptr(resolver, hostname, ip))
    return findings


async def _ptr(resolver: dns.asyncresolver.Resolver, hostname: str, ip: str) -> Finding:
    """The PTR of one sending IP, forward-confirmed."""
    name = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
    fix = f"ask whoever owns {ip} (your hosting provider) to set its PTR to {hostname}"
    try:
        names = [text.rstrip(".").lower() for text in await lookup(resolver, name, "PTR") or []]
    except DnsTemporaryError as exc:
        return Finding(Status.WARN, "ptr", f"PTR look-up for {ip} failed: {exc}")
    if not names:
        return Finding(Status.FAIL, "ptr", f"{ip} has no PTR record", fix)
    for candidate in names:
        if ip in await resolve_host(resolver, candidate):
            status = Status.OK if candidate == hostname.lower() else Status.WARN
            text = f"{ip} has PTR {candidate}, which resolves back to it"
            if status is Status.WARN:
                text += f" (but the EHLO name is {hostname})"
            return Finding(status, "ptr", text, None if status is Status.OK else fix)
    text = f"{ip} has PTR {', '.join(names)}, which does not resolve back to {ip}"
    return Finding(Status.FAIL, "ptr", text, fix)


async def blocklists(
    resolver: dns.asyncresolver.Resolver, sending_ips: Sequence[str], zones: Sequence[str]
) -> list[Finding]:
    """Each sending IP against each DNS blocklist zone (RFC 5782 §2.1 queries)."""
    checks = [_listed(resolver, ip, zone) for ip in sending_ips for zone in zones]
    return list(await asyncio.gather(*checks))


async def _listed(resolver: dns.asyncresolver.Resolver, ip: str, zone: str) -> Finding:
    """One DNSBL query: NXDOMAIN is not listed, 127.0.0.x is listed."""
    address = ipaddress.ip_address(ip)
    reversed_ip = address.reverse_pointer.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")
    query = f"{reversed_ip}.{zone}"
    try:
        answers = await lookup(resolver, query, "A")
    except DnsTemporaryError as exc:
        return Finding(Status.WARN, "dnsbl", f"{zone}: look-up failed ({exc})")
    if not answers:
        return Finding(Status.OK, "dnsbl", f"{ip} is not listed on {zone}")
    if all(answer.startswith("127.255.255.") for answer in answers):
        # Spamhaus answers 127.255.255.x to queries it refuses (public resolvers, no key).
        text = f"{zone} refused the query ({answers[0]}): use a resolver of your own"
        return Finding(Status.WARN, "dnsbl", text)
    reason = " ".join(await _txt(resolver, query))
    text = f"{ip} is LISTED on {zone} ({', '.join(answers)}){': ' + reason if reason else ''}"
    fix = f"find out why at {zone}'s delisting page, fix the cause, then request removal"
    return Finding(Status.FAIL, "dnsbl", text, fix)


async def _txt(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """TXT texts of a name, none on failure."""
    try:
        return [text.strip('"') for text in await lookup(resolver, name, "TXT") or []]
    except DnsTemporaryError:
        return []


async def port25(resolver: dns.asyncresolver.Resolver, target: str, timeout: float = 10) -> Finding:
    """Outbound SMTP reaches a test destination: a 220 greeting within `timeout`."""
    host, _, port_text = target.rpartition(":")
    host, port = host.strip("[]"), int(port_text or 25)
    fix = "outbound port 25 seems blocked: ask your provider to open it, or set COLUMBA_RELAY_URL"
    try:
        addresses = await resolve_host(resolver, host)
        if not addresses:
            return Finding(Status.FAIL, "port 25", f"{host} does not resolve", fix)
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(addresses[0], port)
            try:
                banner = (await reader.readline()).decode("ascii", errors="replace").strip()
            finally:
                writer.close()
                await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        text = f"cannot reach {host}:{port} ({exc or type(exc).__name__})"
        return Finding(Status.FAIL, "port 25", text, fix)
    if not banner.startswith("220"):
        return Finding(Status.FAIL, "port 25", f"{host}:{port} answered {banner[:80]!r}", fix)
    return Finding(Status.OK, "port 25", f"{host}:{port} answered {banner[:60]!r}")


async def domain_records(
    db: Database, resolver: dns.asyncresolver.Resolver, context: CheckContext
) -> list[Finding]:
    """Every domain's records, as `columba domains verify` checks them (nothing is changed)."""
    async with db.session() as session:
        domains = await service.list_domains(session)
        keys = {d.id: await rotation.keys_of(session, d.id) for d in domains}
    if not domains:
        return [Finding(Status.WARN, "domains", "no sending domain", "columba domains add DOMAIN")]
    findings = []
    for domain in domains:
        report = await check_domain(resolver, domain, keys[domain.id], context)
        for record in report.records:
            findings.append(_record_finding(domain.name, record))
    return findings


def _record_finding(domain: str, record: RecordCheck) -> Finding:
    """One record's verdict as a finding."""
    check = f"{domain} {record.kind}"
    if record.status is RecordStatus.VALID:
        return Finding(Status.OK, check, f"{record.name} {record.type}: {record.detail}")
    status = Status.FAIL if record.required or record.kind == "spf" else Status.WARN
    if record.status is RecordStatus.ERROR:
        status = Status.WARN
    text = f"{record.name} {record.type} {record.status}: {record.detail}"
    if record.found:
        text += f" (found: {' | '.join(record.found)[:200]})"
    value = f'"{record.expected}"' if record.type == "TXT" else record.expected
    return Finding(status, check, text, f"publish {record.name}. IN {record.type} {value}")


def listener_certificate(
    cert_path: Path | None, key_path: Path | None, settings: Settings
) -> list[Finding]:
    """The SMTP listeners' certificate: readable, matching its key, valid for HOSTNAME and
    not about to expire."""
    if cert_path is None or key_path is None:
        fix = "set COLUMBA_SMTP_TLS_CERT and COLUMBA_SMTP_TLS_KEY (e.g. from Let's Encrypt)"
        return [Finding(Status.WARN, "tls", "no certificate for the SMTP listeners", fix)]
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        return [Finding(Status.FAIL, "tls", f"cannot load the certificate or key: {exc}")]
    findings = [_expiry(certificate), _covers(certificate, settings.hostname)]
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        findings.append(Finding(Status.FAIL, "tls", "the key does not match the certificate"))
    if certificate.issuer == certificate.subject:
        fix = "use a certificate from a public CA: clients refuse self-signed ones"
        findings.append(Finding(Status.WARN, "tls", "the certificate is self-signed", fix))
    return findings


def _expiry(certificate: x509.Certificate) -> Finding:
    """Days left before the certificate expires."""
    left = certificate.not_valid_after_utc - clock.now()
    fix = "renew the certificate (and restart the listeners)"
    if left <= timedelta(0):
        return Finding(Status.FAIL, "tls", "the certificate has expired", fix)
    if left < timedelta(days=CERT_FAIL_DAYS):
        return Finding(Status.FAIL, "tls", f"the certificate expires in {left.days} days", fix)
    if left < timedelta(days=CERT_WARN_DAYS):
        return Finding(Status.WARN, "tls", f"the certificate expires in {left.days} days", fix)
    return Finding(Status.OK, "tls", f"the certificate is valid for {left.days} more days")


def _covers(certificate: x509.Certificate, hostname: str) -> Finding:
    """Whether the certificate names HOSTNAME (subjectAltName, else the common name)."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = extension.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    hostname = hostname.lower()
    for name in (n.lower() for n in names):
        if name == hostname or (name.startswith("*.") and hostname.partition(".")[2] == name[2:]):
            return Finding(Status.OK, "tls", f"the certificate covers {hostname}")
    fix = f"get a certificate for {hostname}"
    return Finding(
        Status.FAIL, "tls", f"the certificate names {', '.join(names)}, not {hostname}", fix
    )
