"""MTA-STS (RFC 8461) against a local HTTPS policy server and real MX hosts: `enforce` never
delivers to an unlisted MX, without STARTTLS or with a certificate for another name (it
defers); `testing` delivers and reports; policies are cached and survive failed refreshes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import trustme

from app.delivery.mta_sts import (
    CachedPolicy,
    Fetcher,
    MemoryStore,
    MtaSts,
    PolicyError,
    StsPolicy,
    parse_policy,
    parse_txt,
)
from app.delivery.mx import resolve_destination
from app.delivery.outbound import deliver
from app.delivery.pool import ConnectionPool
from app.delivery.smtp import Envelope, SmtpOptions
from app.delivery.throttle import DestinationKey, DestinationLimits
from app.delivery.tls_policy import OPPORTUNISTIC, mx_matches
from tests.fakes.dns import FakeDNS
from tests.fakes.https import PolicyServer
from tests.fakes.mx import ScriptedMX, make_tls_context

KEY = DestinationKey("mx:test", DestinationLimits())
POLICY_HOSTS = ["mta-sts.enforce.test", "mta-sts.testing.test", "mta-sts.cached.test"]


def policy(mode: str, *mx: str, max_age: int = 86400) -> str:
    """A policy body."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path: Path) -> str:
    """The test CA as a PEM file (COLUMBA_TLS_CA_FILE)."""
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest_asyncio.fixture
async def server(tls_ca: trustme.CA, tmp_path: Path) -> AsyncIterator[PolicyServer]:
    """The policy server, answering for the names in POLICY_HOSTS."""
    async with PolicyServer(tls_ca, POLICY_HOSTS, tmp_path) as running:
        yield running


@pytest_asyncio.fixture
async def pool(mx_port: int, ca_file: str) -> AsyncIterator[ConnectionPool]:
    """Connections that validate certificates against the test CA."""
    options = SmtpOptions(
        port=mx_port, helo_name="mta.columba.test", connect_timeout=2, greeting_timeout=2,
        command_timeout=2, data_timeout=5, tls_ca_file=ca_file,
    )  # fmt: skip
    connections = ConnectionPool(options, throttle=None)
    yield connections
    await connections.close()


@pytest_asyncio.fixture
async def mx_hosts(mx_port: int) -> AsyncIterator[list[ScriptedMX]]:
    """MX hosts started by the test, stopped afterwards."""
    started: list[ScriptedMX] = []
    yield started
    for host in started:
        await host.stop()


async def start(
    hosts: list[ScriptedMX], ip: str, port: int, ca: trustme.CA, *names: str
) -> ScriptedMX:
    """An MX on `ip`, with STARTTLS and a certificate for `names` when given."""
    context = make_tls_context(ca, *names) if names else None
    host = ScriptedMX(ip, port, tls_context=context)
    await host.start()
    hosts.append(host)
    return host


def publish(dns: FakeDNS, domain: str, policy_id: str, *mx: tuple[int, str, str]) -> None:
    """MX records, their addresses, the `_mta-sts` TXT and the policy host's address."""
    dns.add_mx(domain, *((pref, name) for pref, name, _ in mx))
    for _, name, ip in mx:
        dns.add_a(name, ip)
    dns.add_txt(f"_mta-sts.{domain}", f"v=STSv1; id={policy_id};")
    dns.add_a(f"mta-sts.{domain}", "127.0.0.1")


def sts(dns: FakeDNS, server: PolicyServer, ca_file: str) -> MtaSts:
    """Policies fetched from the test server, kept in memory."""
    resolver = dns.resolver()
    fetcher = Fetcher(resolver, port=server.port, timeout=5, ca_file=ca_file, allow_private=True)
    return MtaSts(resolver, fetcher, MemoryStore())


async def send(dns: FakeDNS, domain: str, pool: ConnectionPool, policies: MtaSts) -> object:
    """Deliver one message to `domain` under its policy."""
    requirement, failure = await policies.requirement(domain)
    assert failure is None
    destination = await resolve_destination(dns.resolver(), domain, allow_private=True)
    envelope = Envelope("bounce@sender.test", (f"rcpt@{domain}",), b"Subject: x\r\n\r\nhi\r\n")
    return await deliver(destination, envelope, pool, KEY, requirement)


async def test_enforce_delivers_over_tls_validated_for_a_listed_mx(
    dns_server: FakeDNS, server: PolicyServer, pool: ConnectionPool, ca_file: str,
    mx_hosts: list[ScriptedMX], mx_port: int, tls_ca: trustme.CA,
) -> None:  # fmt: skip
    publish(dns_server, "enforce.test", "a1", (10, "mx1.enforce.test", "127.0.0.3"))
    server.serve_policy("enforce.test", policy("enforce", "mx1.enforce.test"))
    mx = await start(mx_hosts, "127.0.0.3", mx_port, tls_ca, "mx1.enforce.test")
    result = await send(dns_server, "enforce.test", pool, sts(dns_server, server, ca_file))
    assert result.replies["rcpt@enforce.test"].code == 250  # type: ignore[attr-defined]
    assert result.tls_verified is True  # type: ignore[attr-defined]
    assert result.tls_cipher  # type: ignore[attr-defined]
    assert mx.messages[0].tls
    assert result.tls_results == [  # type: ignore[attr-defined]
        ("mx1.enforce.test", "127.0.0.3", "success", None)
    ]


async def test_enforce_never_connects_to_an_mx_the_policy_does_not_list(
    dns_server: FakeDNS, server: PolicyServer, pool: ConnectionPool, ca_file: str,
    mx_hosts: list[ScriptedMX], mx_port: int, tls_ca: trustme.CA,
) -> None:  # fmt: skip
    publish(dns_server, "enforce.test", "a1", (10, "mx1.enforce.test", "127.0.0.3"))
    server.serve_policy("enforce.test", policy("enforce", "*.elsewhere.test"))
    mx = await start(mx_hosts, "127.0.0.3", mx_port, tls_ca, "mx1.enforce.test")
    result = await send(dns_server, "enforce.test", pool, sts(dns_server, server, ca_file))
    reply = result.replies["rcpt@enforce.test"]  # type: ignore[attr-defined]
    assert (reply.code, reply.enhanced) == (451, "4.7.5")  # deferred, never bounced
    assert "matches its MTA-STS policy of enforce.test" in reply.text
    assert mx.sessions == 0


async def test_enforce_skips_an_unlisted_mx_for_a_listed_one(
    dns_server: FakeDNS, server: PolicyServer, pool: ConnectionPool, ca_file: str,
    mx_hosts: list[ScriptedMX], mx_port: int, tls_ca: trustme.CA,
) -> None:  # fmt: skip
    publish(
        dns_server, "enforce.test", "a1",
        (5, "rogue.attacker.test", "127.0.0.4"), (10, "mx1.enforce.test", "127.0.0.3"),
    )  # fmt: skip
    server.serve_policy("enforce.test", policy("enforce", "*.enforce.test"))
    rogue = await start(mx_hosts, "127.0.0.4", mx_port, tls_ca, "rogue.attacker.test")
    good = await start(mx_hosts, "127.0.0.3", mx_port, tls_ca, "mx1.enforce.test")
    result = await send(dns_server, "enforce.test", pool, sts(dns_server, server, ca_file))
    assert result.replies["rcpt@enforce.test"].code == 250  # type: ignore[attr-defined]
    assert rogue.sessions == 0
    assert len(good.messages) == 1


async def test_enforce_defers_an_mx_without_starttls(
    dns_server: FakeDNS, server: PolicyServer, pool: ConnectionPool, ca_file: str,
    mx_hosts: list[ScriptedMX], mx_port: int, tls_ca: trustme.CA,
) -> None:  # fmt: skip
    publish(dns_server, "enforce.test", "a1", (10, "mx1.enforce.test", "127.0.0.3"))
    server.serve_policy("enforce.test", policy("enforce", "mx1.enforce.test"))
    plain = await start(mx_hosts, "127.0.0.3", mx_port, tls_ca)
    result = await send(dns_server, "enforce.test", pool, sts(dns_server, server, ca_file))
    reply = result.replies["rcpt@enforce.test"]  # type: ignore[attr-defined]
    assert (reply.code, reply.enhanced) == (451, "4.7.4")
    assert "did not offer STARTTLS" in reply.text
    assert "MTA-STS policy of enforce.test" in reply.text
    assert plain.messages == []
    assert result.tls_results[0][2] == "starttls-not-supported"  # type: ignore[attr-defined]


async def test_enforce_defers_a_certificate_for_another_name(
    dns_server: FakeDNS, server: PolicyServer, pool: ConnectionPool, ca_file: str,
    mx_hosts: list[ScriptedMX], mx_port: int, tls_ca: trustme.CA,
) -> None:  # fmt: skip
    publish(dns_server, "enforce.test", "a1", (10, "mx1.enforce.test", "127.0.0.3"))
    server.serve_policy("enforce.test", policy("enforce", "mx1.enforce.test"))
    wrong = await start(mx_hosts, "127.0.0.3", mx_port, tls_ca, "someone-else.test")
    result = await send(dns_server, "enforce.test", pool, sts(dns_server, server, ca_file))
    reply = result.replies["rcpt@enforce.test"]  # type: ignore[attr-defined]
    assert (reply.code, reply.enhanced) == (451, "4.7.5")
    assert "did not validate" in reply.text
    assert "Hostname mismatch" in reply.text
    assert wrong.messages == []
    assert result.tls_results[0][2] == "certificate-host-mismatch"  # type: ignore[attr-defined]


async def test_testing_mode_delivers_as_usual_and_reports_the_failure(
    dns_server: FakeDNS, server: PolicyServer, pool: ConnectionPool, ca_file: str,
    mx_hosts: list[ScriptedMX], mx_port: int, tls_ca: trustme.CA,
) -> None:  # fmt: skip
    publish(dns_server, "testing.test", "t1", (10, "mx1.testing.test", "127.0.0.3"))
    server.serve_policy("testing.test", policy("testing", "mx1.testing.test"))
    wrong = await start(mx_hosts, "127.0.0.3", mx_port, tls_ca, "someone-else.test")
    result = await send(dns_server, "testing.test", pool, sts(dns_server, server, ca_file))
    assert result.replies["rcpt@testing.test"].code == 250  # type: ignore[attr-defined]
    assert result.tls_verified is False  # type: ignore[attr-defined]
    assert len(wrong.messages) == 1
    assert wrong.messages[0].tls
    assert result.tls_results[0][2] == "certificate-host-mismatch"  # type: ignore[attr-defined]


async def test_testing_mode_delivers_to_an_unlisted_mx_and_reports_it(
    dns_server: FakeDNS, server: PolicyServer, pool: ConnectionPool, ca_file: str,
    mx_hosts: list[ScriptedMX], mx_port: int, tls_ca: trustme.CA,
) -> None:  # fmt: skip
    publish(dns_server, "testing.test", "t1", (10, "mx1.testing.test", "127.0.0.3"))
    server.serve_policy("testing.test", policy("testing", "other.testing.test"))
    mx = await start(mx_hosts, "127.0.0.3", mx_port, tls_ca, "mx1.testing.test")
    result = await send(dns_server, "testing.test", pool, sts(dns_server, server, ca_file))
    assert result.replies["rcpt@testing.test"].code == 250  # type: ignore[attr-defined]
    assert len(mx.messages) == 1
    results = [r[2] for r in result.tls_results]  # type: ignore[attr-defined]
    assert results == ["validation-failure", "success"]


async def test_a_cached_policy_is_kept_when_a_refresh_fails_and_ends_at_max_age(
    dns_server: FakeDNS, server: PolicyServer, ca_file: str, travel: object
) -> None:
    publish(dns_server, "cached.test", "v1", (10, "mx1.cached.test", "127.0.0.3"))
    server.serve_policy("cached.test", policy("enforce", "mx1.cached.test", max_age=3600))
    policies = sts(dns_server, server, ca_file)
    first, failure = await policies.policy("cached.test")
    assert first is not None
    assert failure is None
    assert first.policy.mode == "enforce"
    # Same id: no fetch. A new id whose policy cannot be fetched: the cached one stays.
    await policies.policy("cached.test")
    assert server.fetches == ["mta-sts.cached.test"]
    dns_server.remove("_mta-sts.cached.test")
    dns_server.add_txt("_mta-sts.cached.test", "v=STSv1; id=v2;")
    server.serve_policy("cached.test", "oops", status=500)
    kept, failure = await policies.policy("cached.test")
    assert kept == first
    assert failure is not None
    assert failure.result_type == "sts-policy-fetch-error"
    # Removing the TXT record does not end the policy before max_age (RFC 8461 §5.1) ...
    dns_server.remove("_mta-sts.cached.test")
    assert (await policies.policy("cached.test"))[0] == first
    travel(timedelta(seconds=3601))  # type: ignore[operator]
    # ... but max_age does.
    assert (await policies.policy("cached.test"))[0] is None


async def test_a_new_policy_id_fetches_the_new_policy(
    dns_server: FakeDNS, server: PolicyServer, ca_file: str
) -> None:
    publish(dns_server, "cached.test", "v1", (10, "mx1.cached.test", "127.0.0.3"))
    server.serve_policy("cached.test", policy("testing", "mx1.cached.test"))
    policies = sts(dns_server, server, ca_file)
    assert (await policies.policy("cached.test"))[0].policy.mode == "testing"  # type: ignore[union-attr]
    dns_server.remove("_mta-sts.cached.test")
    dns_server.add_txt("_mta-sts.cached.test", "v=STSv1; id=v2;")
    server.serve_policy("cached.test", policy("enforce", "mx1.cached.test"))
    cached, _ = await policies.policy("cached.test")
    assert cached is not None
    assert (cached.policy_id, cached.policy.mode) == ("v2", "enforce")


@pytest.mark.parametrize(
    ("served", "message"),
    [
        ({"status": 301, "headers": {"Location": "https://evil.test/"}}, "HTTP 301"),
        ({"media_type": "text/html"}, "not text/plain"),
        ({"policy": "x" * 70_000}, "larger than 65536 bytes"),
    ],
)
async def test_fetch_refuses_redirects_other_types_and_oversized_policies(
    dns_server: FakeDNS, server: PolicyServer, ca_file: str, served: dict[str, object], message: str
) -> None:
    dns_server.add_a("mta-sts.enforce.test", "127.0.0.1")
    options = {"policy": policy("enforce", "mx.enforce.test"), **served}
    server.serve_policy("enforce.test", **options)  # type: ignore[arg-type]
    fetch = Fetcher(dns_server.resolver(), port=server.port, ca_file=ca_file, allow_private=True)
    with pytest.raises(PolicyError, match=message):
        await fetch("enforce.test")


async def test_fetch_checks_the_policy_hosts_certificate(
    dns_server: FakeDNS, server: PolicyServer, ca_file: str
) -> None:
    dns_server.add_a("mta-sts.uncovered.test", "127.0.0.1")  # not a name of the certificate
    server.serve_policy("uncovered.test", policy("enforce", "mx.uncovered.test"))
    fetch = Fetcher(dns_server.resolver(), port=server.port, ca_file=ca_file, allow_private=True)
    with pytest.raises(PolicyError) as caught:
        await fetch("uncovered.test")
    assert caught.value.result_type == "sts-webpki-invalid"


async def test_fetch_refuses_a_private_policy_host_unless_allowed(
    dns_server: FakeDNS, server: PolicyServer, ca_file: str
) -> None:
    dns_server.add_a("mta-sts.enforce.test", "127.0.0.1")
    fetch = Fetcher(dns_server.resolver(), port=server.port, ca_file=ca_file)
    with pytest.raises(PolicyError, match="no usable"):
        await fetch("enforce.test")


def test_policy_parsing() -> None:
    parsed = parse_policy(
        "version: STSv1\nmode: enforce\nmx: MX1.Example.com.\nmx: *.example.net\n"
        "max_age: 9999999999"
    )
    assert parsed.mx == ("mx1.example.com", "*.example.net")
    assert parsed.max_age == 31_557_600  # at most a year (RFC 8461 §3.2)
    with pytest.raises(PolicyError, match="max_age"):
        parse_policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: 1e9")
    for broken in ("mode: enforce\nmx: a\nmax_age: 1", "version: STSv1\nmode: on\nmax_age: 1"):
        with pytest.raises(PolicyError) as caught:
            parse_policy(broken)
        assert caught.value.result_type == "sts-policy-invalid"
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 5").mx == ()


def test_txt_record_parsing() -> None:
    assert parse_txt(['"v=STSv1; id=20260101T000000;"']) == "20260101T000000"
    assert parse_txt(['"v=STSv1; id=a;"', '"v=STSv1; id=b;"']) is None  # two records: none
    assert parse_txt(['"v=STSv1; id=not-alnum;"']) is None
    assert parse_txt(['"v=spf1 -all"']) is None


def test_mx_patterns_match_one_label() -> None:
    assert mx_matches("*.example.com", "mx1.example.com")
    assert not mx_matches("*.example.com", "a.b.example.com")
    assert not mx_matches("*.example.com", "example.com")
    assert mx_matches("MX.example.com.", "mx.example.com")


class CountingStore(MemoryStore):
    """A store that counts how often it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    async def load(self, domain: str) -> CachedPolicy | None:
        self.loads += 1
        return await super().load(domain)


async def test_a_domain_without_a_policy_costs_one_store_lookup(dns_server: FakeDNS) -> None:
    async def never(domain: str) -> StsPolicy:
        raise AssertionError("no policy to fetch")

    store = CountingStore()
    policies = MtaSts(dns_server.resolver(), never, store)
    for _ in range(5):
        assert await policies.requirement("plain.test") == (OPPORTUNISTIC, None)
    assert store.loads == 1
