"""Which IP addresses we may connect to: public ones only, unless private ones are allowed.

One function decides for every caller (MX hosts, webhook URLs). An IPv6 address that carries
an IPv4 address for translation or tunnelling reaches that IPv4 host in the end, so it is
judged by the IPv4 address it embeds: `::ffff:127.0.0.1` is loopback, `64:ff9b::a9fe:a9fe`
is the cloud metadata address through NAT64."""

from __future__ import annotations

import ipaddress

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address

# RFC 6052 §2.1: the well-known NAT64 prefix; the IPv4 address is the last 32 bits (/96).
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 4291 §2.5.5.1: "IPv4-compatible" addresses (deprecated), ::a.b.c.d.
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# RFC 2765 §2.1: SIIT's "IPv4-translated" addresses, ::ffff:0:a.b.c.d.
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")

REFUSED_IPV6 = (
    # RFC 8215: local-use NAT64; the operator chooses where the IPv4 address sits
    # (RFC 6052 §2.2 allows /48 to /96), so it cannot be read back: refused outright.
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    # RFC 3879: site-local addresses are deprecated but still routed inside some sites.
    ipaddress.IPv6Network("fec0::/10"),
)


def is_public_address(address: str) -> bool:
    """False for loopback, private, link-local (incl. 169.254.169.254), ULA, site-local,
    reserved and multicast addresses, and for IPv6 forms that embed a non-public IPv4 address
    (mapped, compatible, SIIT, NAT64, 6to4, Teredo); True for globally routable unicast."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, IPv4):
        return _is_public_ipv4(ip)
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        return all(_is_public_ipv4(inner) for inner in embedded)
    if any(ip in network for network in REFUSED_IPV6):
        return False
    return ip.is_global and not ip.is_multicast


def embedded_ipv4(ip: IPv6) -> tuple[IPv4, ...] | None:
    """The IPv4 addresses an IPv6 address stands for, or None when it embeds none."""
    if ip.ipv4_mapped is not None:  # RFC 4291 §2.5.5.2, ::ffff:a.b.c.d
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:  # RFC 3056 §2, 2002:AABB:CCDD::/48
        return (ip.sixtofour,)
    if ip.teredo is not None:  # RFC 4380 §4: the Teredo server and the client's NAT address
        return ip.teredo
    if any(ip in network for network in (NAT64_WELL_KNOWN, IPV4_COMPATIBLE, IPV4_TRANSLATED)):
        return (IPv4(int(ip) & 0xFFFFFFFF),)
    return None


def _is_public_ipv4(ip: IPv4) -> bool:
    """Globally routable unicast IPv4 (not private, shared 100.64/10, reserved, multicast)."""
    return ip.is_global and not ip.is_multicast
