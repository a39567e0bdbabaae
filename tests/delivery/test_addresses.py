"""The one address check behind MX hosts and webhook URLs (CHECKLIST 44, issue 10 item 8)."""

from __future__ import annotations

import pytest

from app.delivery.addresses import is_public_address

REFUSED = [
    # IPv4
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local: cloud metadata"),
    ("100.64.0.1", "shared address space (carrier-grade NAT)"),
    ("0.0.0.0", "this network"),
    ("224.0.0.1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.1", "documentation"),
    # IPv6 of its own
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fd00::1", "unique local"),
    ("fec0::1", "site-local (RFC 3879)"),
    ("fefe::1", "site-local, end of fec0::/10"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("100::1", "discard"),
    # IPv6 that embeds a private IPv4 address
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:a9fe:a9fe", "IPv4-mapped metadata"),
    ("::127.0.0.1", "IPv4-compatible loopback"),
    ("::10.0.0.1", "IPv4-compatible private"),
    ("::ffff:0:7f00:1", "SIIT IPv4-translated loopback"),
    ("::ffff:0:a00:1", "SIIT IPv4-translated private"),
    ("64:ff9b::a9fe:a9fe", "NAT64 well-known prefix, metadata"),
    ("64:ff9b::7f00:1", "NAT64 well-known prefix, loopback"),
    ("64:ff9b::c0a8:101", "NAT64 well-known prefix, 192.168.1.1"),
    ("64:ff9b:1::a9fe:a9fe", "NAT64 local-use prefix (RFC 8215)"),
    ("64:ff9b:1:ffff::808:808", "NAT64 local-use prefix, even with a public IPv4"),
    ("2002:7f00:1::1", "6to4 of 127.0.0.1"),
    ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
    ("2002:c0a8:101::1", "6to4 of 192.168.1.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo, client 127.0.0.1"),
    ("2001:0:a00:1::ffff:ffff", "Teredo, server 10.0.0.1"),
    ("2001::1", "Teredo with nothing public embedded"),
    # not addresses at all
    ("localhost", "a name"),
    ("127.1", "a short form the resolver would not give"),
    ("", "empty"),
]

PUBLIC = [
    ("8.8.8.8", "IPv4"),
    ("93.184.216.34", "IPv4"),
    ("2001:4860:4860::8888", "IPv6"),
    ("2a00:1450:4001:80b::200e", "IPv6"),
    ("::ffff:8.8.8.8", "IPv4-mapped public"),
    ("64:ff9b::808:808", "NAT64 of a public address (a DNS64 answer)"),
    ("2002:808:808::1", "6to4 of a public address"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "Teredo: public server and client 8.8.8.8"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED, ids=[a or "empty" for a, _ in REFUSED])
def test_non_public_addresses_are_refused(address: str, why: str) -> None:
    assert not is_public_address(address), why


@pytest.mark.parametrize(("address", "why"), PUBLIC, ids=[a for a, _ in PUBLIC])
def test_public_addresses_are_allowed(address: str, why: str) -> None:
    assert is_public_address(address), why
