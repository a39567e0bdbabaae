"""TLS-RPT (RFC 8460): daily aggregate reports of our TLS sessions to the domains that publish
`_smtp._tls` with a `rua`, as JSON by HTTPS POST or as a gzipped attachment by mail."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

import dns.asyncresolver
import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.ids import new_id
from app.delivery.addresses import is_public_address
from app.delivery.mta_sts import txt_value
from app.delivery.resolver import DnsTemporaryError, lookup, resolve_host
from app.delivery.smtp import verifying_tls_context
from app.tlspolicy.models import TlsReport, TlsReportCount

MEDIA_TYPE = "application/tlsrpt+gzip"  # RFC 8460 §6.4


@dataclass(frozen=True, slots=True)
class Reporter:
    """Who we are in reports, and how to reach the report URIs."""

    organization: str
    submitter: str  # our host name (RFC 8460 §5.3 "TLS-Report-Submitter")
    contact: str
    resolver: dns.asyncresolver.Resolver
    ca_file: str | None = None
    allow_private: bool = False
    timeout: float = 30.0


async def report_uris(resolver: dns.asyncresolver.Resolver, domain: str) -> list[str]:
    """The `rua` URIs of the domain's `_smtp._tls` TXT record (RFC 8460 §3), mailto: and
    https: only; none when the record is absent or not exactly one."""
    try:
        texts = await lookup(resolver, f"_smtp._tls.{domain}", "TXT")
    except DnsTemporaryError:
        return []
    records = [txt_value(t) for t in texts or []]
    records = [r for r in records if r.replace(" ", "").startswith("v=TLSRPTv1")]
    if len(records) != 1:
        return []
    fields = dict(part.strip().partition("=")[::2] for part in records[0].split(";"))
    uris = [uri.strip() for uri in fields.get("rua", "").split(",")]
    return [uri for uri in uris if uri.startswith(("mailto:", "https://"))]


async def counts_of_day(session: AsyncSession, day: date) -> dict[str, list[TlsReportCount]]:
    """The day's counters by policy domain."""
    rows = await session.execute(
        select(TlsReportCount).where(TlsReportCount.day == day.isoformat())
    )
    grouped: dict[str, list[TlsReportCount]] = defaultdict(list)
    for row in rows.scalars():
        grouped[row.policy_domain].append(row)
    return grouped


def build_report(
    reporter: Reporter, domain: str, day: date, rows: Sequence[TlsReportCount]
) -> dict[str, Any]:
    """The report JSON (RFC 8460 §4.4) for one policy domain and UTC day."""
    start = datetime.combine(day, time(0), tzinfo=None)
    stamp = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (start + timedelta(days=1) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policies: dict[tuple[str, tuple[str, ...]], list[TlsReportCount]] = defaultdict(list)
    for row in rows:
        policies[(row.policy_type, tuple(row.policy_string))].append(row)
    return {
        "organization-name": reporter.organization,
        "date-range": {"start-datetime": stamp, "end-datetime": end},
        "contact-info": reporter.contact,
        "report-id": f"{stamp}_{domain}_{new_id()}@{reporter.submitter}",
        "policies": [
            _policy(domain, kind, lines, group) for (kind, lines), group in policies.items()
        ],
    }


def _policy(
    domain: str, kind: str, lines: tuple[str, ...], rows: Sequence[TlsReportCount]
) -> dict[str, Any]:
    """One policy's summary and failure details (RFC 8460 §4.3-4.4)."""
    ok = sum(row.count for row in rows if row.result_type == "success")
    failures = [row for row in rows if row.result_type != "success"]
    policy: dict[str, Any] = {"policy-type": kind, "policy-domain": domain}
    if lines:
        policy["policy-string"] = list(lines)
        mx = [line.partition(":")[2].strip() for line in lines if line.startswith("mx:")]
        if mx:
            policy["mx-host"] = mx
    return {
        "policy": policy,
        "summary": {
            "total-successful-session-count": ok,
            "total-failure-session-count": sum(row.count for row in failures),
        },
        "failure-details": [_failure(row) for row in failures],
    }


def _failure(row: TlsReportCount) -> dict[str, Any]:
    """One failure-details entry."""
    detail: dict[str, Any] = {
        "result-type": row.result_type,
        "failed-session-count": row.count,
    }
    if row.mx_host:
        detail["receiving-mx-hostname"] = row.mx_host
    if row.receiving_ip:
        detail["receiving-ip"] = row.receiving_ip
    if row.detail:
        detail["additional-information"] = row.detail[:500]
    return detail


def report_filename(reporter: Reporter, domain: str, day: date, unique: str) -> str:
    """`submitter!policy-domain!begin!end!id.json.gz` (RFC 8460 §5.1)."""
    begin = int(datetime.combine(day, time(0)).timestamp())
    return f"{reporter.submitter}!{domain}!{begin}!{begin + 86399}!{unique}.json.gz"


def report_email(
    reporter: Reporter, sender: str, to: str, domain: str, day: date, report: dict[str, Any]
) -> bytes:
    """The report as mail (RFC 8460 §5.3): multipart/report, report-type=tlsrpt, with the
    gzipped JSON attached."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=reporter.submitter)
    message["Subject"] = (
        f"Report Domain: {domain} Submitter: {reporter.submitter} "
        f"Report-ID: <{report['report-id']}>"
    )
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = reporter.submitter
    message.set_content(
        f"This is an aggregate TLS report from {reporter.organization} for {domain}, {day}."
    )
    message.add_attachment(
        gzip.compress(json.dumps(report).encode()),
        maintype="application",
        subtype="tlsrpt+gzip",
        filename=report_filename(reporter, domain, day, new_id()),
    )
    message.set_type("multipart/report")  # keeps the boundary parameter
    message.set_param("report-type", "tlsrpt")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


async def post_report(reporter: Reporter, uri: str, report: dict[str, Any]) -> None:
    """POST the gzipped report to an https: rua (RFC 8460 §5.2), certificate checked, no
    redirects, to a public address only; raises on failure."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    addresses = await resolve_host(reporter.resolver, host)
    usable = [a for a in addresses if reporter.allow_private or is_public_address(a)]
    if not usable:
        raise ValueError(f"{host} has no usable (public) address")
    literal = f"[{usable[0]}]" if ":" in usable[0] else usable[0]
    url = parts._replace(netloc=f"{literal}:{parts.port or 443}").geturl()
    context = verifying_tls_context(reporter.ca_file)
    async with httpx.AsyncClient(
        verify=context, follow_redirects=False, timeout=reporter.timeout
    ) as client:
        response = await client.post(
            url,
            content=gzip.compress(json.dumps(report).encode()),
            headers={"Content-Type": MEDIA_TYPE, "Host": parts.netloc},
            extensions={"sni_hostname": host},
        )
    if not 200 <= response.status_code < 300:
        raise ValueError(f"{uri} answered HTTP {response.status_code}")


SendMail = Callable[[str, bytes], Awaitable[str | None]]  # (to, message) → error or None


async def send_reports(
    session: AsyncSession, reporter: Reporter, day: date, send_mail: SendMail, sender: str
) -> list[TlsReport]:
    """Build and send the day's report of every policy domain that asks for one, once."""
    done = await session.execute(select(TlsReport.policy_domain).where(TlsReport.day == str(day)))
    already = set(done.scalars())
    sent = []
    for domain, rows in sorted((await counts_of_day(session, day)).items()):
        if domain in already:
            continue
        uris = await report_uris(reporter.resolver, domain)
        if not uris:
            continue
        report = build_report(reporter, domain, day, rows)
        delivered, errors = await _deliver(reporter, uris, report, domain, day, send_mail, sender)
        row = TlsReport(
            day=str(day),
            policy_domain=domain,
            report_id=report["report-id"],
            report=report,
            delivered_to=delivered,
            errors=errors,
        )
        session.add(row)
        sent.append(row)
    await session.flush()
    return sent


async def _deliver(
    reporter: Reporter,
    uris: list[str],
    report: dict[str, Any],
    domain: str,
    day: date,
    send_mail: SendMail,
    sender: str,
) -> tuple[list[str], list[str]]:
    """Send to every URI; (those that took it, errors of the others)."""
    delivered: list[str] = []
    errors: list[str] = []
    for uri in uris:
        try:
            if uri.startswith("https://"):
                await post_report(reporter, uri, report)
                error = None
            else:
                to = uri.removeprefix("mailto:").split("?")[0]
                error = await send_mail(to, report_email(reporter, sender, to, domain, day, report))
        except (httpx.HTTPError, OSError, ValueError) as exc:
            error = f"{uri}: {exc}"
        if error is None:
            delivered.append(uri)
        else:
            errors.append(error)
    return delivered, errors
