"""MTA-STS (RFC 8461): discover a receiver's policy, fetch it over HTTPS, cache it, and turn
it into the TLS requirement its deliveries must meet."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import dns.asyncresolver
import httpx

from app.core import clock
from app.delivery.addresses import is_public_address
from app.delivery.resolver import DnsTemporaryError, lookup, resolve_host
from app.delivery.smtp import verifying_tls_context
from app.delivery.tls_policy import OPPORTUNISTIC, TlsLevel, TlsRequirement

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3: senders may limit the body to 64 KiB
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: max_age is at most a year
RETRY_FAILED_FETCH = timedelta(minutes=5)  # a failing policy host is not asked every message
# Most domains have no policy: the store is asked about one at most this often per process.
RECHECK_ABSENT = timedelta(hours=1)
# "No `_mta-sts` record" (most domains) is reused this long: even from the resolver's cache a
# look-up costs about half a millisecond, once per delivery. Domains with a record are asked
# each time (from the resolver's cache), so a new policy id is seen within the record's TTL.
NO_POLICY_MEMO_SECONDS = 60.0
_NEVER = datetime.min.replace(tzinfo=UTC)
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_MODES = ("enforce", "testing", "none")


class PolicyError(Exception):
    """The policy could not be had; `result_type` is its RFC 8460 §4.3.2.2 name."""

    def __init__(self, message: str, result_type: str = "sts-policy-fetch-error") -> None:
        super().__init__(message)
        self.result_type = result_type


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy (RFC 8461 §3.2)."""

    mode: str
    mx: tuple[str, ...]
    max_age: int
    text: str


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A policy with the id it was fetched under and how long it may be used."""

    domain: str
    policy_id: str
    policy: StsPolicy
    fetched_at: datetime
    expires_at: datetime


class PolicyStore(Protocol):
    """Where fetched policies are kept beyond this process (the database, in workers)."""

    async def load(self, domain: str) -> CachedPolicy | None:
        """The stored policy of `domain`, if any."""

    async def save(self, cached: CachedPolicy) -> None:
        """Store (or replace) a policy."""


class MemoryStore:
    """Policies in this process only (tests, and the doctor)."""

    def __init__(self) -> None:
        """Start empty."""
        self.policies: dict[str, CachedPolicy] = {}

    async def load(self, domain: str) -> CachedPolicy | None:
        """The stored policy of `domain`, if any."""
        return self.policies.get(domain)

    async def save(self, cached: CachedPolicy) -> None:
        """Store (or replace) a policy."""
        self.policies[cached.domain] = cached


def parse_txt(texts: list[str]) -> str | None:
    """The policy id of the `_mta-sts` TXT record (RFC 8461 §3.1), or None when there is not
    exactly one valid STSv1 record."""
    records = [txt_value(text) for text in texts]
    records = [record for record in records if record.startswith("v=STSv1")]
    if len(records) != 1:
        return None
    tags = _tags(records[0], ";", "=")
    policy_id = tags.get("id", "")
    return policy_id if _ID.match(policy_id) else None


def parse_policy(text: str) -> StsPolicy:
    """Parse a policy body: `key: value` lines (RFC 8461 §3.2); raises PolicyError."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("the policy's version is not STSv1", "sts-policy-invalid")
    mode = (fields.get("mode") or [""])[0]
    if mode not in _MODES:
        raise PolicyError(f"unknown policy mode {mode!r}", "sts-policy-invalid")
    max_age_text = (fields.get("max_age") or [""])[0]
    if not max_age_text.isdigit() or len(max_age_text) > 10:
        raise PolicyError("the policy has no valid max_age", "sts-policy-invalid")
    mx = tuple(value.lower().rstrip(".") for value in fields.get("mx", []) if value)
    if mode != "none" and not mx:
        raise PolicyError("the policy lists no mx", "sts-policy-invalid")
    return StsPolicy(mode, mx, min(int(max_age_text), MAX_AGE_LIMIT), text)


def requirement_of(cached: CachedPolicy | None) -> TlsRequirement:
    """What deliveries under a cached policy must meet (RFC 8461 §5)."""
    if cached is None or cached.policy.mode == "none":
        return OPPORTUNISTIC
    mode = cached.policy.mode
    return TlsRequirement(
        level=TlsLevel.VERIFY,
        source=f"MTA-STS policy of {cached.domain} (id {cached.policy_id}, mode {mode})",
        mx_patterns=cached.policy.mx,
        report_only=mode == "testing",
        policy_domain=cached.domain,
        policy_id=cached.policy_id,
    )


@dataclass(frozen=True, slots=True)
class Fetcher:
    """Fetches policies over HTTPS: no redirects, certificate checked, size and time bounded."""

    resolver: dns.asyncresolver.Resolver
    port: int = 443
    timeout: float = 10.0
    ca_file: str | None = None
    allow_private: bool = False

    async def __call__(self, domain: str) -> StsPolicy:
        """The policy `domain` serves (RFC 8461 §3.3); raises PolicyError."""
        host = f"mta-sts.{domain}"
        try:
            async with asyncio.timeout(self.timeout):
                address = await self._address(host)
                text = await self._get(host, address)
        except TimeoutError as exc:
            raise PolicyError(f"fetching the policy from {host} timed out") from exc
        return parse_policy(text)

    async def _address(self, host: str) -> str:
        """The first usable address of the policy host (resolved through our resolver, so
        that a private address is refused here and cannot be rebound later)."""
        try:
            addresses = await resolve_host(self.resolver, host)
        except DnsTemporaryError as exc:
            raise PolicyError(f"cannot resolve {host}: {exc}") from exc
        usable = [a for a in addresses if self.allow_private or is_public_address(a)]
        if not usable:
            raise PolicyError(f"{host} has no usable (public) address")
        return usable[0]

    async def _get(self, host: str, address: str) -> str:
        """GET the policy from `address`, validating the certificate for `host`."""
        literal = f"[{address}]" if ":" in address else address
        url = f"https://{literal}:{self.port}{POLICY_PATH}"
        headers = {"Host": host if self.port == 443 else f"{host}:{self.port}"}
        context = verifying_tls_context(self.ca_file)
        async with httpx.AsyncClient(verify=context, follow_redirects=False) as client:
            try:
                request = client.build_request(
                    "GET", url, headers=headers, extensions={"sni_hostname": host}
                )
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                if _is_certificate_error(exc):
                    raise PolicyError(
                        f"the certificate of {host} did not validate: {exc}", "sts-webpki-invalid"
                    ) from exc
                raise PolicyError(f"cannot connect to {host}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise PolicyError(f"fetching the policy from {host} failed: {exc}") from exc
            try:
                return await _read_policy(response, host)
            finally:
                await response.aclose()


async def _read_policy(response: httpx.Response, host: str) -> str:
    """The body of a 200 text/plain answer, at most MAX_POLICY_BYTES."""
    if response.status_code != 200:
        # RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed"; anything but 200 fails.
        raise PolicyError(f"{host} answered HTTP {response.status_code} for the policy")
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/plain":
        raise PolicyError(f"{host} served the policy as {media_type or 'no type'}, not text/plain")
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_POLICY_BYTES:
                raise PolicyError(f"the policy of {host} is larger than {MAX_POLICY_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise PolicyError(f"reading the policy from {host} failed: {exc}") from exc
    return body.decode("utf-8", errors="replace")


class MtaSts:
    """Policies of recipient domains, looked up before each delivery: the `_mta-sts` TXT id
    (the resolver caches it for its TTL), then the cached policy or a fresh fetch."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        fetch: Callable[[str], Awaitable[StsPolicy]],
        store: PolicyStore,
    ) -> None:
        """Use `fetch` for policies and `store` to share them beyond this process."""
        self.resolver = resolver
        self.fetch = fetch
        self.store = store
        self.memory: dict[str, CachedPolicy] = {}
        self._failed: dict[str, tuple[datetime, PolicyError]] = {}
        self._absent: dict[str, datetime] = {}  # domains the store had no policy for, until
        self._no_record: dict[str, float] = {}  # domains without a TXT record, until
        self._locks: dict[str, asyncio.Lock] = {}
        self._loading: dict[str, asyncio.Lock] = {}  # one store look-up per domain at a time

    async def requirement(self, domain: str) -> tuple[TlsRequirement, PolicyError | None]:
        """The requirement for delivering to `domain`, and the fetch failure if the current
        policy could not be had (TLS-RPT reports it)."""
        cached, failure = await self.policy(domain)
        return requirement_of(cached), failure

    async def policy(self, domain: str) -> tuple[CachedPolicy | None, PolicyError | None]:
        """The policy in force for `domain` (None when it has none), and any fetch failure."""
        domain = domain.lower().rstrip(".")
        cached = await self._cached(domain)
        try:
            policy_id = await self._policy_id(domain)
        except DnsTemporaryError:
            return cached, None  # RFC 8461 §5.1: keep using a cached policy
        if policy_id is None:
            # §5.1: a removed TXT record does not end a cached policy before its max_age.
            return cached, None
        if cached is not None and cached.policy_id == policy_id:
            return cached, None
        async with self._locks.setdefault(domain, asyncio.Lock()):
            # Another worker may have fetched it meanwhile: ask the store, not the memo.
            cached = await self._cached(domain, recheck=True)
            if cached is not None and cached.policy_id == policy_id:
                return cached, None
            return await self._refresh(domain, policy_id, cached)

    async def _policy_id(self, domain: str) -> str | None:
        """The id in the domain's `_mta-sts` TXT record (None without one; that memoised)."""
        if self._no_record.get(domain, 0.0) > time.monotonic():
            return None
        texts = await lookup(self.resolver, f"_mta-sts.{domain}", "TXT")
        policy_id = parse_txt(texts or [])
        if policy_id is None:
            if len(self._no_record) > 100_000:
                self._no_record.clear()
            self._no_record[domain] = time.monotonic() + NO_POLICY_MEMO_SECONDS
        return policy_id

    async def _refresh(
        self, domain: str, policy_id: str, cached: CachedPolicy | None
    ) -> tuple[CachedPolicy | None, PolicyError | None]:
        """Fetch the policy named by a new id; on failure keep the cached one (§5.1)."""
        now = clock.now()
        failed = self._failed.get(domain)
        if failed is not None and failed[0] > now:
            return cached, failed[1]
        try:
            policy = await self.fetch(domain)
        except PolicyError as exc:
            self._failed[domain] = (now + RETRY_FAILED_FETCH, exc)
            return cached, exc
        self._failed.pop(domain, None)
        self._absent.pop(domain, None)
        fresh = CachedPolicy(
            domain, policy_id, policy, now, now + timedelta(seconds=policy.max_age)
        )
        self.memory[domain] = fresh
        await self.store.save(fresh)
        return fresh, None

    async def _cached(self, domain: str, *, recheck: bool = False) -> CachedPolicy | None:
        """The unexpired cached policy: this process's, else the store's (asked about a
        domain without one at most every RECHECK_ABSENT, unless `recheck`)."""
        cached = self.memory.get(domain)
        if cached is None and (recheck or self._absent.get(domain, _NEVER) <= clock.now()):
            # Many deliveries to one domain start at once: one asks the store, the others
            # wait for its answer (a stampede would take every database connection).
            async with self._loading.setdefault(domain, asyncio.Lock()):
                cached = self.memory.get(domain)
                if cached is None and (recheck or self._absent.get(domain, _NEVER) <= clock.now()):
                    cached = await self._load(domain)
        if cached is not None and cached.expires_at <= clock.now():
            return None
        return cached

    async def _load(self, domain: str) -> CachedPolicy | None:
        """Ask the store, remembering the answer in this process."""
        cached = await self.store.load(domain)
        if cached is not None:
            self.memory[domain] = cached
            self._absent.pop(domain, None)
        else:
            if len(self._absent) > 100_000:
                self._absent.clear()
            self._absent[domain] = clock.now() + RECHECK_ABSENT
        return cached


def _is_certificate_error(exc: BaseException) -> bool:
    """Whether a connection failed on certificate validation."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def txt_value(text: str) -> str:
    """A TXT record's presentation form as one string (its quoted parts joined)."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    return "".join(parts) if parts else text


def _tags(record: str, separator: str, assign: str) -> dict[str, str]:
    """`k=v; k2=v2` → {k: v, k2: v2}, whitespace trimmed."""
    pairs = (part.partition(assign) for part in record.split(separator))
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}
