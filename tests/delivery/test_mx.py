"""MX resolution against a real DNS server (RFC 5321 §5.1, RFC 7505)."""

from __future__ import annotations

import random
from collections import Counter

import dns.asyncresolver

from app.delivery.mx import order_by_preference, resolve_destination
from app.delivery.resolver import make_resolver
from tests.fakes.dns import FakeDNS


def resolver_for(dns_server: FakeDNS) -> dns.asyncresolver.Resolver:
    """A resolver asking only the test DNS server."""
    return make_resolver([dns_server.nameserver], timeout=1.0)


async def test_mx_hosts_come_best_first_with_their_addresses(dns_server: FakeDNS) -> None:
    dns_server.add_mx("multi.test", (20, "b.multi.test"), (10, "a.multi.test"))
    dns_server.add_a("a.multi.test", "127.0.0.2")
    dns_server.add_aaaa("a.multi.test", "::1")
    dns_server.add_a("b.multi.test", "127.0.0.3")
    destination = await resolve_destination(
        resolver_for(dns_server), "multi.test", allow_private=True
    )
    assert destination.failure is None
    assert [(h.name, h.addresses) for h in destination.hosts] == [
        ("a.multi.test", ("127.0.0.2", "::1")),
        ("b.multi.test", ("127.0.0.3",)),
    ]


async def test_a_domain_with_mx_is_never_sent_to_its_own_a_record(dns_server: FakeDNS) -> None:
    dns_server.add_mx("both.test", (10, "mx.both.test"))
    dns_server.add_a("mx.both.test", "127.0.0.2")
    dns_server.add_a("both.test", "127.0.0.9")
    destination = await resolve_destination(
        resolver_for(dns_server), "both.test", allow_private=True
    )
    assert [address for _, address in destination.addresses()] == ["127.0.0.2"]


async def test_implicit_mx(dns_server: FakeDNS) -> None:
    dns_server.add_a("implicit.test", "127.0.0.7")
    destination = await resolve_destination(
        resolver_for(dns_server), "implicit.test", allow_private=True
    )
    assert [(h.name, h.addresses) for h in destination.hosts] == [("implicit.test", ("127.0.0.7",))]


async def test_null_mx_refuses_without_resolving_hosts(dns_server: FakeDNS) -> None:
    dns_server.add_mx("null.test", (0, "."))
    destination = await resolve_destination(resolver_for(dns_server), "null.test")
    assert destination.failure is not None
    assert (destination.failure.code, destination.failure.enhanced) == (556, "5.1.10")
    assert [q for q in dns_server.queries if q[1] in ("A", "AAAA")] == []


async def test_nxdomain_is_permanent_and_servfail_temporary(dns_server: FakeDNS) -> None:
    dns_server.set_servfail("flaky.test")
    resolver = resolver_for(dns_server)
    missing = await resolve_destination(resolver, "missing.test")
    flaky = await resolve_destination(resolver, "flaky.test")
    assert missing.failure is not None
    assert missing.failure.is_permanent
    assert flaky.failure is not None
    assert flaky.failure.is_transient


async def test_dns_timeout_is_temporary(dns_server: FakeDNS) -> None:
    dns_server.set_timeout("slow.test")
    destination = await resolve_destination(
        make_resolver([dns_server.nameserver], timeout=0.3), "slow.test"
    )
    assert destination.failure is not None
    assert destination.failure.enhanced == "4.4.3"


async def test_private_addresses_are_refused_unless_allowed(dns_server: FakeDNS) -> None:
    dns_server.add_mx("internal.test", (10, "mx.internal.test"))
    dns_server.add_a("mx.internal.test", "10.0.0.5", "169.254.169.254")
    refused = await resolve_destination(resolver_for(dns_server), "internal.test")
    allowed = await resolve_destination(
        resolver_for(dns_server), "internal.test", allow_private=True
    )
    assert refused.failure is not None
    assert refused.failure.enhanced == "5.4.4"
    assert allowed.failure is None


async def test_ipv6_forms_of_private_ipv4_are_refused(dns_server: FakeDNS) -> None:
    """NAT64, 6to4, IPv4-compatible and SIIT addresses are judged by the IPv4 address they
    embed (issue 10, item 8); a public one among them is kept."""
    dns_server.add_mx("tunnel.test", (10, "mx.tunnel.test"))
    dns_server.add_aaaa(
        "mx.tunnel.test",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "::127.0.0.1",
        "::ffff:0:a00:1",
        "fec0::25",
        "64:ff9b::808:808",
    )
    destination = await resolve_destination(resolver_for(dns_server), "tunnel.test")
    assert destination.failure is None
    assert [address for _, address in destination.addresses()] == ["64:ff9b::808:808"]


def test_equal_preferences_are_shuffled_evenly() -> None:
    rng = random.Random(1234)
    records = [(10, "a"), (10, "b"), (10, "c"), (5, "first")]
    picks = Counter(order_by_preference(records, rng)[1][1] for _ in range(1000))
    assert all(order_by_preference(records, rng)[0] == (5, "first") for _ in range(10))
    assert set(picks) == {"a", "b", "c"}
    assert all(250 < count < 420 for count in picks.values()), picks
