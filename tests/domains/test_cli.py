"""`columba doctor`, `columba domains verify` and `columba domains rotate-dkim`, run as real
processes against the test DNS server, a test MX and the test database."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import trustme

from app.core import clock
from app.core.config import Settings
from app.domains import service as domains
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender

ROOT = str(Path(__file__).resolve().parents[2])
SENDING_IP = "192.0.2.10"  # TEST-NET-1


async def columba(settings: Settings, *args: str, **env: str) -> tuple[int, str]:
    """Run `columba ARGS` with the test settings; (exit status, stdout and stderr)."""
    environment = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "COLUMBA_DATABASE_URL": settings.database_url,
        "COLUMBA_SECRET_KEY": settings.secret_key.get_secret_value() if settings.secret_key else "",
        "COLUMBA_HOSTNAME": settings.hostname,
        "COLUMBA_DNS_NAMESERVERS": ",".join(settings.dns_nameservers),
        "COLUMBA_DNS_TIMEOUT": "2s",
        **{f"COLUMBA_{name.upper()}": value for name, value in env.items()},
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", *args, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def certificate(ca: trustme.CA, tmp_path: Path, days: int) -> tuple[str, str]:
    """A listener certificate for the EHLO name expiring in `days` days: (cert, key) files."""
    leaf = ca.issue_cert("mta.columba.test", not_after=clock.now() + timedelta(days=days))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


async def test_doctor_on_a_misconfigured_setup(
    settings: Settings, sender: Sender, dns_server: FakeDNS, mx: ScriptedMX, mx_port: int,
    tls_ca: trustme.CA, tmp_path: Path,
) -> None:  # fmt: skip
    dns_server.add_a(settings.hostname, SENDING_IP)  # but no PTR for the IP
    dns_server.add_a(f"{'.'.join(reversed(SENDING_IP.split('.')))}.bl.test", "127.0.0.2")
    dns_server.add_txt(f"{'.'.join(reversed(SENDING_IP.split('.')))}.bl.test", "Listed: spam trap")
    dns_server.add_txt("clean.test", "a zone that lists nobody")
    cert, key = certificate(tls_ca, tmp_path, days=5)
    status, out = await columba(
        settings, "doctor",
        sending_ips=SENDING_IP, dnsbl_zones="bl.test,clean.test",
        port25_probe=f"127.0.0.2:{mx_port}", smtp_tls_cert=cert, smtp_tls_key=key,
        allow_private_destinations="true",
    )  # fmt: skip
    print(out)  # the report quotes it
    assert status == 1
    assert f"[FAIL] ptr: {SENDING_IP} has no PTR record" in out
    assert f"fix: ask whoever owns {SENDING_IP} (your hosting provider) to set its PTR" in out
    assert f"[  OK] ehlo: mta.columba.test resolves to {SENDING_IP}" in out
    assert f"[FAIL] dnsbl: {SENDING_IP} is LISTED on bl.test (127.0.0.2): Listed: spam trap" in out
    assert f"[  OK] dnsbl: {SENDING_IP} is not listed on clean.test" in out
    assert "[  OK] port 25: 127.0.0.2:" in out
    assert "[  OK] sender.test dkim:" in out
    assert "[FAIL] sender.test spf: sender.test TXT missing: no SPF record: publish one" in out
    assert 'fix: publish sender.test. IN TXT "v=spf1 a:mta.columba.test ~all"' in out
    assert "[WARN] sender.test dmarc:" in out
    assert "[FAIL] tls: the certificate expires in 4 days" in out
    assert "[  OK] tls: the certificate covers mta.columba.test" in out
    assert "[FAIL] settings: ALLOW_PRIVATE_DESTINATIONS is on" in out
    assert "to fix," in out


async def test_doctor_passes_a_well_configured_setup_offline(
    settings: Settings, sender: Sender, dns_server: FakeDNS, tls_ca: trustme.CA, tmp_path: Path
) -> None:
    dns_server.add_a(settings.hostname, SENDING_IP)
    dns_server.add_ptr(SENDING_IP, settings.hostname)
    for record in domains.dns_records(sender.domain, hostname=settings.hostname):
        if record.type == "MX":
            dns_server.add_mx(record.name, (10, settings.hostname))
        elif not record.name.startswith(sender.domain.dkim_selector):
            dns_server.add_txt(record.name, record.value)
    cert, key = certificate(tls_ca, tmp_path, days=90)
    status, out = await columba(
        settings, "doctor", "--offline",
        sending_ips=SENDING_IP, smtp_tls_cert=cert, smtp_tls_key=key,
        public_url="https://mail.columba.test", redis_url="redis://127.0.0.1:6379/0",
    )  # fmt: skip
    assert status == 0, out
    assert "[SKIP] dnsbl: skipped (--offline)" in out
    assert f"[  OK] ptr: {SENDING_IP} has PTR mta.columba.test, which resolves back to it" in out
    assert "[FAIL]" not in out


async def test_domains_verify_prints_each_record(
    settings: Settings, sender: Sender, dns_server: FakeDNS
) -> None:
    dns_server.add_a(settings.hostname, SENDING_IP)
    dns_server.add_txt("sender.test", "v=spf1 ip4:198.51.100.1 -all")
    status, out = await columba(settings, "domains", "verify", "sender.test", "--account", "acme")
    assert status == 0, out
    assert "sender.test: verified" in out
    assert "[valid  ] TXT cb" in out
    assert "[wrong  ] TXT sender.test" in out
    assert f"{SENDING_IP}: fail" in out
    assert "found:    v=spf1 ip4:198.51.100.1 -all" in out
    assert "[missing] MX  bounces.sender.test" in out
    dns_server.remove(domains.dkim_record_name(sender.domain))
    status, out = await columba(settings, "domains", "verify", "sender.test", "--account", "acme")
    assert status == 1
    assert "sender.test: NOT verified" in out


async def test_domains_rotate_dkim_prints_the_new_record(
    settings: Settings, sender: Sender, dns_server: FakeDNS
) -> None:
    status, out = await columba(
        settings, "domains", "rotate-dkim", "sender.test", "--account", "acme"
    )
    assert status == 0, out
    assert '._domainkey.sender.test.  IN  TXT  "v=DKIM1; k=rsa; p=' in out
    assert "The new key signs once its record verifies" in out
    status, out = await columba(
        settings, "domains", "rotate-dkim", "sender.test", "--account", "acme"
    )
    assert status == 1
    assert "already has a new key waiting" in out
    status, out = await columba(settings, "domains", "list", "--account", "acme")
    assert "DKIM (next key: publish)" in out
