"""TLS through the whole service: every attempt records the TLS version, cipher and whether
the certificate validated (shown in the message view); the destination table and MTA-STS
policies are enforced by the worker (deferrals with the reason in the attempt); TLS-RPT
reports reach an https: rua and a mailto: rua."""

from __future__ import annotations

import email
import gzip
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import trustme
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database
from app.tlspolicy.models import MtaStsPolicy, TlsReport, TlsReportCount
from tests.fakes.dns import FakeDNS
from tests.fakes.https import PolicyServer
from tests.fakes.mx import ScriptedMX, make_tls_context
from tests.support import Sender, run_job, run_worker
from tests.test_end_to_end import message_view, send
from worker import deliverability

POLICY = "version: STSv1\r\nmode: {mode}\r\nmx: mx1.example.test\r\nmax_age: 86400\r\n"


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path: Path) -> Path:
    """The test CA as a PEM file."""
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest_asyncio.fixture
async def mx_hosts() -> AsyncIterator[list[ScriptedMX]]:
    """MX hosts started by the test, stopped afterwards."""
    started: list[ScriptedMX] = []
    yield started
    for host in started:
        await host.stop()


@pytest.fixture
def start(
    mx_hosts: list[ScriptedMX], mx_port: int, tls_ca: trustme.CA, dns_server: FakeDNS
) -> Callable[..., Any]:
    """Start the MX of `domain` on `ip`, with STARTTLS for `names` when given."""

    async def run(domain: str, ip: str, *names: str) -> ScriptedMX:
        dns_server.add_mx(domain, (10, f"mx1.{domain}"))
        dns_server.add_a(f"mx1.{domain}", ip)
        host = ScriptedMX(
            ip, mx_port, tls_context=make_tls_context(tls_ca, *names) if names else None
        )
        await host.start()
        mx_hosts.append(host)
        return host

    return run


async def attempt_of(client: httpx.AsyncClient, sender: Sender, message_id: str) -> dict[str, Any]:
    """The message's last attempt."""
    view = await message_view(client, sender, message_id)
    attempt: dict[str, Any] = view["recipients"][0]["attempts"][-1]
    return attempt


async def test_every_attempt_records_tls_details(
    client: httpx.AsyncClient, sender: Sender, settings: Settings, redis_url: str,
    start: Callable[..., Any], ca_file: Path,
) -> None:  # fmt: skip
    await start("example.test", "127.0.0.2", "mx1.example.test")
    trusting = settings.model_copy(update={"tls_ca_file": ca_file})
    accepted = await send(client, sender, to=["a@example.test"])
    await run_worker(trusting, redis_url)
    attempt = await attempt_of(client, sender, accepted["id"])
    assert attempt["tls_version"].startswith("TLSv1")
    assert attempt["tls_cipher"]
    assert attempt["tls_verified"] is True
    # Without the CA the certificate does not validate: delivered all the same, and recorded.
    accepted = await send(client, sender, to=["b@example.test"])
    await run_worker(settings, redis_url)
    attempt = await attempt_of(client, sender, accepted["id"])
    assert attempt["outcome"] == "delivered"
    assert attempt["tls_version"].startswith("TLSv1")
    assert attempt["tls_verified"] is False


async def test_plaintext_attempts_record_no_tls(
    client: httpx.AsyncClient, sender: Sender, settings: Settings, redis_url: str,
    start: Callable[..., Any],
) -> None:  # fmt: skip
    await start("example.test", "127.0.0.2")
    accepted = await send(client, sender, to=["a@example.test"])
    await run_worker(settings, redis_url)
    attempt = await attempt_of(client, sender, accepted["id"])
    assert (attempt["tls_version"], attempt["tls_cipher"], attempt["tls_verified"]) == (
        None, None, None,
    )  # fmt: skip


async def test_a_destination_requiring_tls_defers_a_plaintext_mx(
    client: httpx.AsyncClient, sender: Sender, settings: Settings, redis_url: str,
    start: Callable[..., Any],
) -> None:  # fmt: skip
    plain = await start("example.test", "127.0.0.2")
    strict = settings.model_copy(update={"destination_tls": (".test=encrypt",)})
    accepted = await send(client, sender, to=["a@example.test"])
    await run_worker(strict, redis_url)
    attempt = await attempt_of(client, sender, accepted["id"])
    assert attempt["outcome"] == "deferred"
    assert (attempt["code"], attempt["enhanced_code"]) == (451, "4.7.4")
    assert "did not offer STARTTLS; TLS is required by destination table" in attempt["response"]
    assert plain.messages == []


async def test_verify_level_needs_a_valid_certificate(
    client: httpx.AsyncClient, sender: Sender, settings: Settings, redis_url: str,
    start: Callable[..., Any], ca_file: Path,
) -> None:  # fmt: skip
    mx = await start("example.test", "127.0.0.2", "mx1.example.test")
    encrypt = settings.model_copy(update={"destination_tls": ("example.test=encrypt",)})
    verify = settings.model_copy(update={"destination_tls": ("example.test=verify",)})
    first = await send(client, sender, to=["a@example.test"])
    await run_worker(encrypt, redis_url)  # any certificate will do
    assert (await attempt_of(client, sender, first["id"]))["outcome"] == "delivered"
    second = await send(client, sender, to=["b@example.test"])
    await run_worker(verify, redis_url)  # the test CA is not trusted: deferred
    attempt = await attempt_of(client, sender, second["id"])
    assert (attempt["outcome"], attempt["enhanced_code"]) == ("deferred", "4.7.5")
    assert "a valid certificate is required by destination table" in attempt["response"]
    assert len(mx.messages) == 1


async def test_the_worker_enforces_mta_sts_and_reports_by_tls_rpt(
    client: httpx.AsyncClient, sender: Sender, settings: Settings, redis_url: str, db: Database,
    dns_server: FakeDNS, start: Callable[..., Any], ca_file: Path, tls_ca: trustme.CA,
    tmp_path: Path, travel: Callable[[timedelta], None],
) -> None:  # fmt: skip
    names = ["mta-sts.example.test", "reports.example.test"]
    async with PolicyServer(tls_ca, names, tmp_path) as server:
        plain = await start("example.test", "127.0.0.2")  # no STARTTLS
        dns_server.add_txt("_mta-sts.example.test", "v=STSv1; id=p1;")
        dns_server.add_a("mta-sts.example.test", "127.0.0.1")
        server.serve_policy("example.test", POLICY.format(mode="enforce"))
        tuned = settings.model_copy(update={"tls_ca_file": ca_file, "mta_sts_port": server.port})
        accepted = await send(client, sender, to=["a@example.test"])
        await run_worker(tuned, redis_url)
        attempt = await attempt_of(client, sender, accepted["id"])
        assert (attempt["outcome"], attempt["enhanced_code"]) == ("deferred", "4.7.4")
        assert "MTA-STS policy of example.test (id p1, mode enforce)" in attempt["response"]
        assert plain.messages == []
        async with db.session() as session:
            stored = await session.get_one(MtaStsPolicy, "example.test")
            assert (stored.policy_id, stored.mode, stored.mx) == (
                "p1",
                "enforce",
                ["mx1.example.test"],
            )

        # TLS-RPT: the day's counters, then yesterday's report to both rua URIs.
        rua = f"https://reports.example.test:{server.port}/tlsrpt,mailto:tlsrpt@reports.test"
        dns_server.add_txt("_smtp._tls.example.test", f"v=TLSRPTv1; rua={rua}")
        dns_server.add_a("reports.example.test", "127.0.0.1")
        inbox = await start("reports.test", "127.0.0.3")
        await run_job(tuned, deliverability.flush_tls_counts)
        travel(timedelta(days=1))
        assert await run_job(tuned, deliverability.send_tls_reports) == 1
        assert await run_job(tuned, deliverability.send_tls_reports) == 0  # once a day

    [report] = server.reports
    assert server.report_types == ["application/tlsrpt+gzip"]
    [policy] = report["policies"]
    assert policy["policy"]["policy-type"] == "sts"
    assert policy["policy"]["policy-domain"] == "example.test"
    assert policy["policy"]["mx-host"] == ["mx1.example.test"]
    assert policy["summary"] == {
        "total-successful-session-count": 0, "total-failure-session-count": 1,
    }  # fmt: skip
    assert policy["failure-details"][0]["result-type"] == "starttls-not-supported"
    assert policy["failure-details"][0]["receiving-mx-hostname"] == "mx1.example.test"
    assert report["date-range"]["start-datetime"].endswith("T00:00:00Z")

    [mail] = await inbox.wait_for(1)
    parsed = email.message_from_bytes(mail.data)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "tlsrpt"
    assert parsed["TLS-Report-Domain"] == "example.test"
    attachment = next(p for p in parsed.walk() if p.get_content_type() == "application/tlsrpt+gzip")
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert json.loads(gzip.decompress(payload))["policies"]
    assert str(attachment.get_filename()).startswith(f"{settings.hostname}!example.test!")
    async with db.session() as session:
        row = (await session.execute(select(TlsReport))).scalar_one()
        assert sorted(row.delivered_to) == sorted(rua.split(","))
        assert (await session.execute(select(TlsReportCount))).scalars().all()


async def test_testing_mode_delivers_and_counts_the_session(
    client: httpx.AsyncClient, sender: Sender, settings: Settings, redis_url: str, db: Database,
    dns_server: FakeDNS, start: Callable[..., Any], ca_file: Path, tls_ca: trustme.CA,
    tmp_path: Path,
) -> None:  # fmt: skip
    async with PolicyServer(tls_ca, ["mta-sts.example.test"], tmp_path) as server:
        mx = await start("example.test", "127.0.0.2", "mx1.example.test")
        dns_server.add_txt("_mta-sts.example.test", "v=STSv1; id=t1;")
        dns_server.add_a("mta-sts.example.test", "127.0.0.1")
        server.serve_policy("example.test", POLICY.format(mode="testing"))
        tuned = settings.model_copy(update={"tls_ca_file": ca_file, "mta_sts_port": server.port})
        accepted = await send(client, sender, to=["a@example.test"])
        await run_worker(tuned, redis_url)
        await run_job(tuned, deliverability.flush_tls_counts)
    attempt = await attempt_of(client, sender, accepted["id"])
    assert (attempt["outcome"], attempt["tls_verified"]) == ("delivered", True)
    assert len(mx.messages) == 1
    async with db.session() as session:
        [count] = (await session.execute(select(TlsReportCount))).scalars().all()
    assert (count.result_type, count.count, count.policy_type) == ("success", 1, "sts")
