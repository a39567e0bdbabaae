"""DMARC (RFC 7489): find and parse a domain's policy, and say whether our DKIM signature and
SPF-checked bounce domain would align with its From domain under it."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import dns.asyncresolver
from publicsuffixlist import PublicSuffixList

from app.delivery.resolver import lookup
from app.domains.spf import joined_txt

_POLICIES = ("none", "quarantine", "reject")


class DmarcSyntaxError(ValueError):
    """The record is not a valid DMARC record."""


@dataclass(frozen=True, slots=True)
class DmarcPolicy:
    """The parts of a DMARC record that decide alignment and handling (§6.3)."""

    record: str
    published_at: str  # the name it was found at (the From domain's or the organisation's)
    policy: str
    subdomain_policy: str
    adkim: str  # r | s
    aspf: str  # r | s
    rua: tuple[str, ...]


@functools.cache
def _suffixes() -> PublicSuffixList:
    """The Public Suffix List shipped with publicsuffixlist (no network at run time)."""
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registered domain (RFC 7489 §3.2): the public suffix plus one label."""
    domain = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(domain) or domain


def aligned(author_domain: str, other: str, mode: str) -> bool:
    """Identifier alignment (§3.1): equal in strict mode, same organisation in relaxed."""
    author_domain, other = author_domain.lower(), other.lower()
    if mode == "s":
        return author_domain == other
    return organizational_domain(author_domain) == organizational_domain(other)


def parse(record: str, published_at: str) -> DmarcPolicy:
    """Parse `v=DMARC1; p=...` (§6.3, §6.4); raises DmarcSyntaxError."""
    parts = [part.strip() for part in record.split(";") if part.strip()]
    tags: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep:
            raise DmarcSyntaxError(f"{part!r} is not a tag=value pair")
        tags[name.strip().lower()] = value.strip()
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        raise DmarcSyntaxError("the record does not start with v=DMARC1")
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        raise DmarcSyntaxError(f"p={tags.get('p', '')!r}: must be none, quarantine or reject")
    subdomain = tags.get("sp", policy).lower()
    if subdomain not in _POLICIES:
        raise DmarcSyntaxError(f"sp={subdomain!r}: must be none, quarantine or reject")
    adkim, aspf = tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower()
    if adkim not in ("r", "s") or aspf not in ("r", "s"):
        raise DmarcSyntaxError("adkim and aspf must be r or s")
    rua = tuple(uri.strip() for uri in tags.get("rua", "").split(",") if uri.strip())
    return DmarcPolicy(record, published_at, policy, subdomain, adkim, aspf, rua)


async def find_record(
    resolver: dns.asyncresolver.Resolver, from_domain: str
) -> tuple[str, str] | None:
    """(record, where) for the From domain: its own `_dmarc` record, else its organisational
    domain's (§6.6.3). Several records at one name count as none."""
    names = [from_domain]
    organisation = organizational_domain(from_domain)
    if organisation != from_domain:
        names.append(organisation)
    for name in names:
        texts = await lookup(resolver, f"_dmarc.{name}", "TXT")
        records = [joined_txt(text) for text in texts or []]
        records = [r for r in records if r.replace(" ", "").startswith("v=DMARC1")]
        if len(records) == 1:
            return records[0], f"_dmarc.{name}"
    return None
