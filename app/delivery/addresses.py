"""Which IP addresses we may connect to: public ones only, unless private ones are allowed."""

from __future__ import annotations

import ipaddress


def is_public_address(address: str) -> bool:
    """False for loopback, private, link-local (incl. 169.254.169.254), ULA, reserved and
    IPv4-mapped forms of those; True for globally routable unicast addresses."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
