"""The FakeDNS test server, queried over loopback by dnspython's async resolver."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.TXT
import dns.resolver
import pytest
import pytest_asyncio

from tests.fakes.dns import FakeDNS, split_txt


@pytest_asyncio.fixture(loop_scope="session")
async def fake_dns() -> AsyncIterator[FakeDNS]:
    """A running FakeDNS on a kernel-picked port."""
    server = FakeDNS()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_resolver(server: FakeDNS, lifetime: float = 2.0) -> dns.asyncresolver.Resolver:
    """A resolver configured the way the application configures one for tests."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port
    resolver.timeout = lifetime
    resolver.lifetime = lifetime
    return resolver


def dkim_record(key_bits: int) -> str:
    """A DKIM TXT value the size of a real RSA key of that many bits."""
    # A DER SubjectPublicKeyInfo is ~38 octets of framing plus the modulus.
    der = os.urandom(key_bits // 8 + 38)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def mx_pairs(answer: dns.resolver.Answer) -> list[tuple[int, str]]:
    """(preference, exchange) pairs of an MX answer, by preference."""
    pairs = []
    for rdata in answer:
        assert isinstance(rdata, dns.rdtypes.ANY.MX.MX)
        pairs.append((rdata.preference, rdata.exchange.to_text()))
    return sorted(pairs)


def txt_values(answer: dns.resolver.Answer) -> list[bytes]:
    """Each TXT record of an answer with its character-strings joined."""
    values = []
    for rdata in answer:
        assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
        values.append(b"".join(rdata.strings))
    return values


async def test_mx_with_several_preferences(fake_dns: FakeDNS) -> None:
    """All MX records come back with their preferences."""
    fake_dns.add_mx("example.test", (20, "mx2.example.test"), (10, "mx1.example.test"))
    fake_dns.add_mx("example.test", (30, "backup.example.test"))
    answer = await make_resolver(fake_dns).resolve("example.test", "MX")
    assert mx_pairs(answer) == [
        (10, "mx1.example.test."),
        (20, "mx2.example.test."),
        (30, "backup.example.test."),
    ]


async def test_null_mx(fake_dns: FakeDNS) -> None:
    """Exchange "." is served as a null MX (RFC 7505)."""
    fake_dns.add_mx("nomail.test", (0, "."))
    answer = await make_resolver(fake_dns).resolve("nomail.test", "MX")
    [rdata] = list(answer)
    assert isinstance(rdata, dns.rdtypes.ANY.MX.MX)
    assert (rdata.preference, rdata.exchange) == (0, dns.name.root)


async def test_a_and_aaaa(fake_dns: FakeDNS) -> None:
    """A and AAAA records of one name are answered per type."""
    fake_dns.add_a("mx1.example.test", "127.0.0.2", "127.0.0.3")
    fake_dns.add_aaaa("mx1.example.test", "::1")
    resolver = make_resolver(fake_dns)
    a = await resolver.resolve("mx1.example.test", "A")
    aaaa = await resolver.resolve("mx1.example.test", "AAAA")
    assert sorted(rdata.to_text() for rdata in a) == ["127.0.0.2", "127.0.0.3"]
    assert [rdata.to_text() for rdata in aaaa] == ["::1"]


async def test_dkim_sized_txt_is_split_and_joins_back(fake_dns: FakeDNS) -> None:
    """A 2048-bit DKIM key is served as several <=255-octet strings of one record."""
    record = dkim_record(2048)
    assert len(record) > 255
    fake_dns.add_txt("sel._domainkey.example.test", record)
    answer = await make_resolver(fake_dns).resolve("sel._domainkey.example.test", "TXT")
    [rdata] = list(answer)
    assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    assert len(rdata.strings) == 2
    assert all(len(chunk) <= 255 for chunk in rdata.strings)
    assert txt_values(answer) == [record.encode()]


async def test_oversized_udp_answer_retried_over_tcp(fake_dns: FakeDNS) -> None:
    """A 4096-bit key overflows 512-octet UDP: the TC answer sends the resolver to TCP."""
    record = dkim_record(4096)
    fake_dns.add_txt("big._domainkey.example.test", record, "second record")
    answer = await make_resolver(fake_dns).resolve("big._domainkey.example.test", "TXT")
    assert sorted(txt_values(answer)) == sorted([record.encode(), b"second record"])
    assert fake_dns.tcp_queries == 1


def test_split_txt_boundaries() -> None:
    """Splitting keeps every octet and never exceeds 255 octets a string."""
    assert split_txt("") == [b""]
    assert split_txt("a" * 255) == [b"a" * 255]
    assert split_txt("a" * 256) == [b"a" * 255, b"a"]


async def test_unknown_name_is_nxdomain(fake_dns: FakeDNS) -> None:
    """A name never configured does not exist."""
    with pytest.raises(dns.resolver.NXDOMAIN):
        await make_resolver(fake_dns).resolve("unknown.test", "MX")


async def test_set_nxdomain_for_every_type(fake_dns: FakeDNS) -> None:
    """set_nxdomain() replaces the records of a name."""
    fake_dns.add_a("gone.test", "127.0.0.5")
    fake_dns.set_nxdomain("gone.test")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await make_resolver(fake_dns).resolve("gone.test", "A")


async def test_missing_type_is_nodata(fake_dns: FakeDNS) -> None:
    """A name with records but none of the type asked answers NOERROR, empty."""
    fake_dns.add_a("host.test", "127.0.0.5")
    with pytest.raises(dns.resolver.NoAnswer):
        await make_resolver(fake_dns).resolve("host.test", "MX")


async def test_servfail(fake_dns: FakeDNS) -> None:
    """SERVFAIL from the only nameserver leaves the resolver without nameservers."""
    fake_dns.set_servfail("broken.test")
    with pytest.raises(dns.resolver.NoNameservers):
        await make_resolver(fake_dns).resolve("broken.test", "MX")


async def test_timeout(fake_dns: FakeDNS) -> None:
    """A name scripted to time out is never answered."""
    fake_dns.set_timeout("slow.test")
    with pytest.raises(dns.exception.Timeout):
        await make_resolver(fake_dns, lifetime=0.2).resolve("slow.test", "MX")
    assert ("slow.test", "MX") in fake_dns.queries


async def test_records_after_a_fault_win(fake_dns: FakeDNS) -> None:
    """Adding records to a faulty name ends the fault (the name recovered)."""
    fake_dns.set_servfail("flaky.test")
    fake_dns.add_mx("flaky.test", (10, "mx.flaky.test"))
    answer = await make_resolver(fake_dns).resolve("flaky.test", "MX")
    assert mx_pairs(answer) == [(10, "mx.flaky.test.")]


async def test_names_are_case_insensitive_with_or_without_dot(fake_dns: FakeDNS) -> None:
    """Configured and queried names match regardless of case and final dot."""
    fake_dns.add_a("Mixed.Example.TEST.", "127.0.0.7")
    answer = await make_resolver(fake_dns).resolve("mixed.example.test", "A")
    assert [rdata.to_text() for rdata in answer] == ["127.0.0.7"]
    assert fake_dns.queries == [("mixed.example.test", "A")]


async def test_remove_and_reset(fake_dns: FakeDNS) -> None:
    """remove() forgets one name, reset() all names and the query log."""
    fake_dns.add_a("one.test", "127.0.0.1")
    fake_dns.add_a("two.test", "127.0.0.2")
    fake_dns.remove("ONE.test.")
    resolver = make_resolver(fake_dns)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("one.test", "A")
    await resolver.resolve("two.test", "A")
    fake_dns.reset()
    assert fake_dns.queries == []
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("two.test", "A")


async def test_nameserver_and_resolver_helper(fake_dns: FakeDNS) -> None:
    """`nameserver` is ip:port and resolver() asks this server."""
    assert fake_dns.nameserver == f"127.0.0.1:{fake_dns.port}"
    fake_dns.add_a("helper.test", "127.0.0.9")
    answer = await fake_dns.resolver().resolve("helper.test", "A")
    assert [rdata.to_text() for rdata in answer] == ["127.0.0.9"]


async def test_stop_closes_open_tcp_connections() -> None:
    """stop() closes client connections still open, so nothing leaks."""
    async with FakeDNS() as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        await asyncio.sleep(0.01)
        assert len(server.tcp_connections) == 1
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
