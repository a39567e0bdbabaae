"""Every record of a domain checked against the test DNS server: correct, missing, wrong, past
the SPF look-up limit, and DMARC alignment."""

from __future__ import annotations

import pytest

from app.delivery.signing import generate_rsa_key, public_key_record
from app.domains import spf
from app.domains.checks import CheckContext, DomainReport, RecordStatus, check_domain
from app.domains.models import Domain
from tests.fakes.dns import FakeDNS

CONTEXT = CheckContext(
    hostname="mta.columba.test", inbound_host="mta.columba.test", sending_ips=("192.0.2.10",)
)


@pytest.fixture(scope="module")
def record() -> str:
    """A DKIM public key record (one key for the module: generating RSA keys is slow)."""
    return public_key_record(generate_rsa_key())


def domain(record: str) -> Domain:
    """A domain as `columba domains add good.test` makes it."""
    return Domain(
        id="d1", account_id="a1", name="good.test", dkim_selector="cb202612",
        dkim_public_record=record, bounce_domain="bounces.good.test",
    )  # fmt: skip


def publish_all(dns: FakeDNS, record: str) -> None:
    """Every record, as printed by `columba domains add`."""
    dns.add_a("mta.columba.test", "192.0.2.10")
    dns.add_txt("cb202612._domainkey.good.test", record)
    dns.add_txt("good.test", "v=spf1 a:mta.columba.test ~all")
    dns.add_mx("bounces.good.test", (10, "mta.columba.test"))
    dns.add_txt("bounces.good.test", "v=spf1 a:mta.columba.test -all")
    dns.add_txt("_dmarc.good.test", "v=DMARC1; p=none; rua=mailto:dmarc@good.test")


def by_kind(report: DomainReport) -> dict[str, RecordStatus]:
    """Each record's status by kind."""
    return {r.kind: r.status for r in report.records}


async def test_a_correctly_published_domain_is_valid_everywhere(
    dns_server: FakeDNS, record: str
) -> None:
    publish_all(dns_server, record)
    report = await check_domain(dns_server.resolver(), domain(record), [], CONTEXT)
    assert by_kind(report) == dict.fromkeys(
        ["dkim", "spf", "bounce_mx", "bounce_spf", "dmarc"], RecordStatus.VALID
    )
    assert report.verified
    dmarc = next(r for r in report.records if r.kind == "dmarc")
    assert "DKIM (d=good.test, adkim=r) aligns" in dmarc.detail
    assert "SPF (MAIL FROM bounces.good.test, aspf=r) aligns" in dmarc.detail


async def test_missing_records_are_reported_with_what_to_publish(
    dns_server: FakeDNS, record: str
) -> None:
    dns_server.add_a("mta.columba.test", "192.0.2.10")
    dns_server.add_txt("good.test", "google-site-verification=abc")  # a TXT, not SPF
    report = await check_domain(dns_server.resolver(), domain(record), [], CONTEXT)
    assert by_kind(report) == dict.fromkeys(
        ["dkim", "spf", "bounce_mx", "bounce_spf", "dmarc"], RecordStatus.MISSING
    )
    assert not report.verified
    dkim = report.records[0]
    assert dkim.required
    assert dkim.expected == record
    assert dkim.name == "cb202612._domainkey.good.test"


async def test_wrong_records_say_what_was_found(dns_server: FakeDNS, record: str) -> None:
    publish_all(dns_server, record)
    other_key = public_key_record(generate_rsa_key())
    dns_server.remove("cb202612._domainkey.good.test")
    dns_server.add_txt("cb202612._domainkey.good.test", other_key)
    dns_server.remove("good.test")
    dns_server.add_txt("good.test", "v=spf1 ip4:198.51.100.0/24 -all")
    dns_server.remove("bounces.good.test")
    dns_server.add_mx("bounces.good.test", (10, "mx.elsewhere.test"))
    dns_server.add_txt("bounces.good.test", "v=spf1 a:mta.columba.test -all")
    dns_server.remove("_dmarc.good.test")
    dns_server.add_txt("_dmarc.good.test", "v=DMARC1; p=block")
    report = await check_domain(dns_server.resolver(), domain(record), [], CONTEXT)
    found = {r.kind: r for r in report.records}
    assert found["dkim"].status is RecordStatus.WRONG
    assert found["dkim"].found == [other_key]
    assert found["spf"].status is RecordStatus.WRONG
    assert found["spf"].detail == "192.0.2.10: fail"
    assert found["bounce_mx"].status is RecordStatus.WRONG
    assert "mx.elsewhere.test" in found["bounce_mx"].detail
    assert found["bounce_spf"].status is RecordStatus.VALID
    assert found["dmarc"].status is RecordStatus.WRONG
    assert "p='block'" in found["dmarc"].detail


async def test_an_spf_record_past_ten_lookups_is_wrong(dns_server: FakeDNS, record: str) -> None:
    publish_all(dns_server, record)
    dns_server.remove("good.test")
    # Our address matches first, so evaluation for it stops early, but the record as a
    # whole needs 11 look-ups, and receivers that walk it all fail it (RFC 7208 §4.6.4).
    includes = " ".join(f"include:spf{i}.vendor.test" for i in range(10))
    dns_server.add_txt("good.test", f"v=spf1 ip4:192.0.2.10 {includes} ~all")
    for i in range(10):
        dns_server.add_txt(
            f"spf{i}.vendor.test",
            "v=spf1 a:mail.vendor.test -all" if i == 9 else f"v=spf1 ip4:203.0.113.{i} -all",
        )
    report = await check_domain(dns_server.resolver(), domain(record), [], CONTEXT)
    spf_check = next(r for r in report.records if r.kind == "spf")
    assert spf_check.status is RecordStatus.WRONG
    assert "needs 11 DNS look-ups" in spf_check.detail
    assert await spf.count_lookups(dns_server.resolver(), "good.test") == 11


async def test_spf_at_the_limit_passes(dns_server: FakeDNS, record: str) -> None:
    publish_all(dns_server, record)
    dns_server.remove("good.test")
    includes = " ".join(f"include:spf{i}.vendor.test" for i in range(9))
    dns_server.add_txt("good.test", f"v=spf1 {includes} a:mta.columba.test ~all")
    for i in range(9):
        dns_server.add_txt(f"spf{i}.vendor.test", f"v=spf1 ip4:203.0.113.{i} -all")
    report = await check_domain(dns_server.resolver(), domain(record), [], CONTEXT)
    spf_check = next(r for r in report.records if r.kind == "spf")
    assert spf_check.status is RecordStatus.VALID, spf_check.detail
    assert "(10 DNS look-ups)" in spf_check.detail


async def test_two_spf_records_are_a_permanent_error(dns_server: FakeDNS, record: str) -> None:
    publish_all(dns_server, record)
    dns_server.add_txt("good.test", "v=spf1 -all")
    report = await check_domain(dns_server.resolver(), domain(record), [], CONTEXT)
    spf_check = next(r for r in report.records if r.kind == "spf")
    assert spf_check.status is RecordStatus.WRONG
    assert "2 SPF records" in spf_check.detail


async def test_strict_spf_alignment_relies_on_dkim(dns_server: FakeDNS, record: str) -> None:
    publish_all(dns_server, record)
    dns_server.remove("_dmarc.good.test")
    dns_server.add_txt("_dmarc.good.test", "v=DMARC1; p=reject; aspf=s")
    report = await check_domain(dns_server.resolver(), domain(record), [], CONTEXT)
    dmarc = next(r for r in report.records if r.kind == "dmarc")
    assert dmarc.status is RecordStatus.VALID
    assert "aspf=s) does not align" in dmarc.detail
    assert "adkim=r) aligns" in dmarc.detail


async def test_dmarc_of_the_organisational_domain_applies(dns_server: FakeDNS, record: str) -> None:
    publish_all(dns_server, record)
    sub = domain(record)
    sub.name, sub.bounce_domain = "news.good.test", "bounces.news.good.test"
    dns_server.add_txt("cb202612._domainkey.news.good.test", record)
    report = await check_domain(dns_server.resolver(), sub, [], CONTEXT)
    dmarc = next(r for r in report.records if r.kind == "dmarc")
    assert dmarc.status is RecordStatus.VALID
    assert "at _dmarc.good.test" in dmarc.detail


async def test_spf_evaluation_follows_includes_mx_and_redirect(dns_server: FakeDNS) -> None:
    dns_server.add_txt("a.test", "v=spf1 include:b.test -all")
    dns_server.add_txt("b.test", "v=spf1 mx/24 redirect=c.test")
    dns_server.add_mx("b.test", (10, "mx.b.test"))
    dns_server.add_a("mx.b.test", "198.51.100.7")
    dns_server.add_txt("c.test", "v=spf1 ip6:2001:db8::/32 ~all")
    resolver = dns_server.resolver()
    assert (await spf.evaluate(resolver, "a.test", "198.51.100.200")).result == "pass"
    assert (await spf.evaluate(resolver, "c.test", "2001:db8::1")).result == "pass"
    assert (await spf.evaluate(resolver, "c.test", "192.0.2.1")).result == "softfail"
    assert (await spf.evaluate(resolver, "a.test", "192.0.2.1")).result == "fail"
    assert (await spf.evaluate(resolver, "none.test", "192.0.2.1")).result == "none"
    dns_server.add_txt("loop.test", "v=spf1 include:loop.test -all")
    assert (await spf.evaluate(resolver, "loop.test", "192.0.2.1")).result == "permerror"
