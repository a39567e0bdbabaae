"""Who may scrape metrics: a key with the `metrics.read` scope, or a client address in
COLUMBA_METRICS_ALLOW_IPS (a Prometheus on the internal network, without a key)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from app.accounts.cache import KeyCache
from app.accounts.scopes import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks_of(entries: Sequence[str]) -> tuple[Network, ...]:
    """`10.0.0.0/8`, `127.0.0.1`, `::1` … as networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry)


def address_allowed(host: str | None, networks: Sequence[Network]) -> bool:
    """Whether the client address lies in one of the networks."""
    if host is None or not networks:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def bearer_of(header: str | None) -> str | None:
    """The key of `Authorization: Bearer <key>`, or None."""
    scheme, _, token = (header or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def key_allows_metrics(keys: KeyCache, header: str | None) -> bool | None:
    """None without a key or with an unknown one (401), False for a key without the scope
    (403), True for a key with `metrics.read` or full access."""
    token = bearer_of(header)
    principal = await keys.authenticate(token) if token else None
    if principal is None:
        return None
    return principal.allows(Scope.METRICS_READ)
