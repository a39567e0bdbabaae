"""DNS resolver construction: the system's, or the nameservers COLUMBA_DNS_NAMESERVERS names."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver


def parse_nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    """`ip` or `ip:port` (`[v6]:port` for IPv6) → a UDP/TCP nameserver."""
    host, port = entry, 53
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = int(port_text)
    return dns.nameserver.Do53Nameserver(host, port)


def make_resolver(nameservers: Sequence[str], *, timeout: float) -> dns.asyncresolver.Resolver:
    """An async resolver with a TTL-respecting cache; system configuration when none are named."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [parse_nameserver(entry) for entry in nameservers]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 3.0)
    resolver.cache = dns.resolver.LRUCache(max_size=10_000)
    return resolver


class DnsTemporaryError(Exception):
    """SERVFAIL, timeout or no reachable nameserver: worth retrying later."""


async def lookup(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list[str] | None:
    """Record texts for name/type: [] when the name exists without such records, None for
    NXDOMAIN; raises DnsTemporaryError for SERVFAIL and timeouts."""
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.resolver.NoAnswer:
        return []
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        raise DnsTemporaryError(str(exc) or exc.__class__.__name__) from exc
    return [rdata.to_text() for rdata in answer]


async def resolve_host(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """A host's A and AAAA addresses, IPv4 first, looked up together; an IP literal is its own
    address; [] when it has none (a lookup that fails temporarily counts as none)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    results = await asyncio.gather(
        lookup(resolver, host, "A"), lookup(resolver, host, "AAAA"), return_exceptions=True
    )
    addresses: list[str] = []
    for result in results:
        if isinstance(result, DnsTemporaryError):
            continue
        if isinstance(result, BaseException):
            raise result
        addresses.extend(result or [])
    return addresses
