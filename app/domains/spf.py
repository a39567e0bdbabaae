"""SPF evaluation (RFC 7208) of a domain's record for our sending addresses, counting the DNS
look-ups its evaluation needs against the limit of §4.6.4."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.asyncresolver

from app.delivery.resolver import DnsTemporaryError, lookup

LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4: mechanisms and modifiers that query DNS
VOID_LOOKUP_LIMIT = 2  # §4.6.4: look-ups that find nothing
WALK_LIMIT = 100  # counting stops here: the record is far past the limit anyway
MX_NAME_LIMIT = 10  # §4.6.4: addresses looked up per `mx`
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_COUNTED = {"include", "a", "mx", "ptr", "exists"}


class PermError(Exception):
    """The record cannot be evaluated: every receiver treats it as permerror (§2.6.7)."""


class TempError(Exception):
    """DNS failed temporarily (§2.6.6)."""


@dataclass
class SpfEvaluation:
    """What evaluating a domain's SPF record for one address found."""

    record: str | None
    result: str  # pass | fail | softfail | neutral | none | permerror | temperror
    lookups: int = 0
    error: str | None = None


@dataclass
class _State:
    """Look-up counters of one evaluation, shared through includes and redirects."""

    lookups: int = 0
    void: int = 0
    seen: set[str] = field(default_factory=set)
    limit: int = LOOKUP_LIMIT

    def count(self) -> None:
        """One more DNS-querying term; past the limit the record is a permerror."""
        self.lookups += 1
        if self.lookups > self.limit:
            raise PermError(f"more than {self.limit} DNS look-ups (RFC 7208 §4.6.4)")


async def spf_record(resolver: dns.asyncresolver.Resolver, domain: str) -> str | None:
    """The domain's one `v=spf1` record (§4.5); PermError when there are several."""
    try:
        texts = await lookup(resolver, domain, "TXT")
    except DnsTemporaryError as exc:
        raise TempError(str(exc)) from exc
    records = [joined_txt(text) for text in texts or []]
    records = [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if len(records) > 1:
        raise PermError(f"{domain} publishes {len(records)} SPF records; exactly one is allowed")
    return records[0] if records else None


async def evaluate(resolver: dns.asyncresolver.Resolver, domain: str, ip: str) -> SpfEvaluation:
    """check_host(ip, domain) (§4), with the record found and the look-ups it took."""
    state = _State()
    record: str | None = None
    try:
        record = await spf_record(resolver, domain)
        if record is None:
            return SpfEvaluation(None, "none")
        result = await _check(resolver, domain, record, ipaddress.ip_address(ip), state)
    except PermError as exc:
        return SpfEvaluation(record, "permerror", state.lookups, str(exc))
    except TempError as exc:
        return SpfEvaluation(record, "temperror", state.lookups, str(exc))
    return SpfEvaluation(record, result, state.lookups)


async def count_lookups(resolver: dns.asyncresolver.Resolver, domain: str) -> int:
    """Every DNS-querying term reachable from the record, whichever address asks (an
    address matched early stops evaluation before the limit; receivers may not), counted
    up to WALK_LIMIT."""
    state = _State(limit=WALK_LIMIT)
    record = await spf_record(resolver, domain)
    if record is not None:
        await _walk(resolver, domain, record, state)
    return state.lookups


async def _walk(
    resolver: dns.asyncresolver.Resolver, domain: str, record: str, state: _State
) -> None:
    """Count the terms of `record` and of every include and redirect it names."""
    terms, redirect = _parse(record)
    for _, name, value in terms:
        if name in _COUNTED:
            state.count()
        if name == "include":
            await _walk_into(resolver, value or "", state)
    if redirect is not None:
        state.count()
        await _walk_into(resolver, redirect, state)


async def _walk_into(resolver: dns.asyncresolver.Resolver, target: str, state: _State) -> None:
    """Follow an include or redirect once (loops are permerrors, §5.2)."""
    if target in state.seen:
        raise PermError(f"SPF include loop through {target}")
    state.seen.add(target)
    record = await spf_record(resolver, target)
    if record is None:
        raise PermError(f"{target} (included) has no SPF record")
    await _walk(resolver, target, record, state)


def _parse(record: str) -> tuple[list[tuple[str, str, str | None]], str | None]:
    """(qualifier, mechanism, value) terms and the redirect= modifier (§4.6.1, §6.1)."""
    terms: list[tuple[str, str, str | None]] = []
    redirect: str | None = None
    for term in record.split()[1:]:
        if "=" in term and ":" not in term.split("=")[0]:
            name, _, value = term.partition("=")
            if name.lower() == "redirect":
                redirect = value
            continue  # exp= and unknown modifiers do not change the result
        qualifier = term[0] if term[0] in _QUALIFIERS else "+"
        body = term[1:] if term[0] in _QUALIFIERS else term
        name, _, value = body.partition(":")
        if "/" in name:
            name, _, cidr = name.partition("/")
            value = (value or "") + "/" + cidr
        name = name.lower()
        if name not in {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"}:
            raise PermError(f"unknown SPF mechanism {term!r}")
        terms.append((qualifier, name, value or None))
    return terms, redirect


async def _check(
    resolver: dns.asyncresolver.Resolver,
    domain: str,
    record: str,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    state: _State,
) -> str:
    """Evaluate the record's terms left to right (§4.6.2); the first match decides."""
    terms, redirect = _parse(record)
    for qualifier, name, value in terms:
        if name in _COUNTED:
            state.count()
        if await _matches(resolver, domain, name, value, ip, state):
            return _QUALIFIERS[qualifier]
    if redirect is not None:
        state.count()
        target = await spf_record(resolver, redirect)
        if target is None:
            raise PermError(f"redirect to {redirect}, which has no SPF record")
        return await _check(resolver, redirect, target, ip, state)
    return "neutral"


async def _matches(
    resolver: dns.asyncresolver.Resolver,
    domain: str,
    name: str,
    value: str | None,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    state: _State,
) -> bool:
    """Whether one mechanism matches the address (§5)."""
    target, _, cidr = (value or "").partition("/")
    target = target or domain
    if name == "all":
        return True
    if name in {"ip4", "ip6"}:
        return _in_network(ip, target + (f"/{cidr}" if cidr else ""))
    if name == "include":
        return await _include(resolver, target, ip, state)
    if name == "a":
        return any(_in_network(ip, a, cidr) for a in await _addresses(resolver, target, ip, state))
    if name == "mx":
        return await _mx_matches(resolver, target, ip, cidr, state)
    if name == "exists":
        return bool(await _query(resolver, target, "A", state))
    return False  # ptr: "SHOULD NOT be used" (§5.5); it never matches here


async def _include(
    resolver: dns.asyncresolver.Resolver,
    target: str,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    state: _State,
) -> bool:
    """include: matches when the included record passes (§5.2)."""
    record = await spf_record(resolver, target)
    if record is None:
        raise PermError(f"{target} (included) has no SPF record")
    return await _check(resolver, target, record, ip, state) == "pass"


async def _mx_matches(
    resolver: dns.asyncresolver.Resolver,
    target: str,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    cidr: str,
    state: _State,
) -> bool:
    """mx: matches an address of any of the domain's MX hosts (§5.4)."""
    exchanges = [
        text.split()[-1].rstrip(".") for text in await _query(resolver, target, "MX", state)
    ]
    if len(exchanges) > MX_NAME_LIMIT:
        raise PermError(f"{target} has more than {MX_NAME_LIMIT} MX hosts (RFC 7208 §4.6.4)")
    for exchange in exchanges:
        if any(_in_network(ip, a, cidr) for a in await _addresses(resolver, exchange, ip, state)):
            return True
    return False


async def _addresses(
    resolver: dns.asyncresolver.Resolver,
    name: str,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    state: _State,
) -> list[str]:
    """A or AAAA records of `name`, the family of `ip`."""
    return await _query(resolver, name, "A" if ip.version == 4 else "AAAA", state)


async def _query(
    resolver: dns.asyncresolver.Resolver, name: str, rdtype: str, state: _State
) -> list[str]:
    """A look-up within an evaluation, counting void answers (§4.6.4)."""
    try:
        found = await lookup(resolver, name, rdtype)
    except DnsTemporaryError as exc:
        raise TempError(str(exc)) from exc
    if not found:
        state.void += 1
        if state.void > VOID_LOOKUP_LIMIT:
            raise PermError(f"more than {VOID_LOOKUP_LIMIT} void DNS look-ups (RFC 7208 §4.6.4)")
    return found or []


def _in_network(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, address: str, cidr: str = ""
) -> bool:
    """Whether `ip` is in address/cidr; addresses of the other family never match."""
    try:
        network = ipaddress.ip_network(address + (f"/{cidr}" if cidr else ""), strict=False)
    except ValueError as exc:
        raise PermError(f"bad address in SPF record: {address!r}") from exc
    return ip.version == network.version and ip in network


def joined_txt(text: str) -> str:
    """A TXT record in presentation form (`"part" "part"`) as the one string it stands for."""
    if text.startswith('"'):
        return "".join(part.strip('"') for part in text.split('" "'))
    return text
