"""Where to deliver mail for a domain: MX hosts and their addresses (RFC 5321 §5.1, RFC 7505)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncresolver

from app.delivery.addresses import is_public_address
from app.delivery.replies import Reply, synthetic
from app.delivery.resolver import DnsTemporaryError, lookup, resolve_host

MAX_ADDRESSES = 10  # like Postfix's smtp_mx_address_limit: bound the work one attempt can do


@dataclass(frozen=True, slots=True)
class MXHost:
    """One mail exchanger with the addresses it resolved to (IPv4 first)."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Destination:
    """The hosts to try for a domain, best first, or why there are none."""

    domain: str
    hosts: tuple[MXHost, ...] = ()
    failure: Reply | None = None

    @classmethod
    def refuses_mail(cls, domain: str, reply: Reply) -> Destination:
        """A destination that cannot take mail now (temporary) or ever (permanent)."""
        return cls(domain=domain, failure=reply)

    def addresses(self) -> list[tuple[MXHost, str]]:
        """(host, address) pairs in the order to try them, at most MAX_ADDRESSES."""
        pairs = [(host, address) for host in self.hosts for address in host.addresses]
        return pairs[:MAX_ADDRESSES]


def _dns_failure(domain: str, exc: Exception) -> Reply:
    return synthetic(451, "4.4.3", f"DNS lookup for {domain} failed temporarily ({exc})")


def order_by_preference(
    records: Iterable[tuple[int, str]], rng: random.Random | None = None
) -> list[tuple[int, str]]:
    """Lowest preference first; equal preferences in random order (RFC 5321 §5.1)."""
    rng = rng or random.Random()
    shuffled = list(records)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda record: record[0])  # sorted() is stable


def _parse_mx(texts: list[str]) -> list[tuple[int, str]]:
    """'10 mx.example.' → (10, 'mx.example')."""
    records = []
    for text in texts:
        preference, _, exchange = text.partition(" ")
        records.append((int(preference), exchange.rstrip(".").lower() or "."))
    return records


async def resolve_destination(
    resolver: dns.asyncresolver.Resolver,
    domain: str,
    *,
    allow_private: bool = False,
    rng: random.Random | None = None,
) -> Destination:
    """MX hosts for `domain`, best first (RFC 5321 §5.1)."""
    try:
        texts = await lookup(resolver, domain, "MX")
        if texts is None:
            return Destination.refuses_mail(
                domain, synthetic(550, "5.1.2", f"domain {domain} does not exist (NXDOMAIN)")
            )
        records = _parse_mx(texts)
        if records and all(exchange == "." for _, exchange in records):
            # RFC 7505 §3: "MX 0 ." means the domain accepts no mail; fail without connecting.
            return Destination.refuses_mail(
                domain, synthetic(556, "5.1.10", f"domain {domain} accepts no mail (null MX)")
            )
        records = [(pref, exchange) for pref, exchange in records if exchange != "."]
        if not records:
            # RFC 5321 §5.1: no MX records → the domain itself is the implicit MX.
            records = [(0, domain)]
        hosts = await _resolve_hosts(resolver, order_by_preference(records, rng))
    except DnsTemporaryError as exc:
        return Destination.refuses_mail(domain, _dns_failure(domain, exc))
    return _checked_destination(domain, hosts, allow_private=allow_private)


async def _resolve_hosts(
    resolver: dns.asyncresolver.Resolver, records: list[tuple[int, str]]
) -> list[MXHost]:
    """Addresses of every MX host, looked up concurrently, order kept."""
    address_lists = await asyncio.gather(
        *(resolve_host(resolver, exchange) for _, exchange in records)
    )
    return [
        MXHost(name=exchange, preference=preference, addresses=tuple(addresses))
        for (preference, exchange), addresses in zip(records, address_lists, strict=True)
    ]


def _checked_destination(domain: str, hosts: list[MXHost], *, allow_private: bool) -> Destination:
    """Drop hosts without usable addresses; say why when none is left."""
    resolved = [host for host in hosts if host.addresses]
    if not resolved:
        return Destination.refuses_mail(
            domain, synthetic(451, "4.4.4", f"no address found for the mail hosts of {domain}")
        )
    if not allow_private:
        resolved = [
            MXHost(host.name, host.preference, tuple(filter(is_public_address, host.addresses)))
            for host in resolved
        ]
        resolved = [host for host in resolved if host.addresses]
        if not resolved:
            return Destination.refuses_mail(
                domain,
                synthetic(
                    550, "5.4.4", f"the mail hosts of {domain} have only non-public addresses"
                ),
            )
    return Destination(domain=domain, hosts=tuple(resolved))


def relay_destination(host: str, addresses: Iterable[str]) -> Destination:
    """A fixed smarthost as the only destination."""
    return Destination(
        domain=host, hosts=(MXHost(name=host, preference=0, addresses=tuple(addresses)),)
    )
