"""The protections a public submission listener needs: lockouts after failed AUTH (per client
IP, and per API key and client network) and a per-key message rate, counted in Redis so that
every listener process shares them.

A key's failures are counted per client network, and lock the key for that network only: its
public prefix is no secret (it is in logs and dashboards), so a count across all networks
would let anyone who knows it lock the owner out. Guessing from many networks is not capped
per key, which costs nothing: the secret is 256 random bits, and each address still has its
own lockout.

Redis trouble never stops mail: a check that cannot reach Redis lets the client through and
logs a warning (the database, not Redis, decides what is accepted).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core import clock
from app.core.ratelimit import FixedWindowLimiter, RateLimitResult
from app.core.throttled_log import ThrottledWarning

log = logging.getLogger(__name__)
# Every SMTP command checks the protections: while Redis is away, one line now and then.
_UNPROTECTED = ThrottledWarning(log)

T = TypeVar("T")
RATE_WINDOW_SECONDS = 60  # limits are per minute
_PREFIX = "columba:smtp"
# One client network: an IPv4 address, or an IPv6 /64 (RFC 4291 §2.5.1: interface identifiers
# are 64 bits, so one host may use any address of its /64).
IPV6_NETWORK_PREFIX = 64


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """The thresholds (from Settings)."""

    max_ip_failures: int
    max_key_failures: int
    lockout_seconds: int


class Guard:
    """Lockouts and rates for the submission listener."""

    def __init__(self, redis: Redis, limits: GuardLimits) -> None:
        self.redis = redis
        self.limits = limits
        self._failures = FixedWindowLimiter(redis, prefix=f"{_PREFIX}:authfail")
        self._rate = FixedWindowLimiter(redis, prefix=f"{_PREFIX}:rate")

    async def ip_locked_for(self, ip: str) -> int:
        """Seconds the client IP stays locked out (0: not locked)."""
        return await _open_on_error(self._locked_for(f"ip:{ip}"), 0)

    async def key_locked_for(self, prefix: str, *, ip: str) -> int:
        """Seconds the API key (by its public prefix) stays locked out for AUTH from the
        network of `ip`."""
        return await _open_on_error(self._locked_for(_key_subject(prefix, ip)), 0)

    async def locked_for(self, *, ip: str, key_prefix: str | None) -> tuple[int, int]:
        """Seconds the client IP stays locked out, and the key (by its public prefix, when
        given) for AUTH from the network of `ip`: one round trip for both."""
        return await _open_on_error(self._both_locked_for(ip, key_prefix), (0, 0))

    async def _both_locked_for(self, ip: str, key_prefix: str | None) -> tuple[int, int]:
        subjects = [f"ip:{ip}"] + ([_key_subject(key_prefix, ip)] if key_prefix else [])
        values = await self.redis.mget([self._lock_key(subject) for subject in subjects])
        ip_seconds, *key_seconds = (_seconds_left(value) for value in values)
        return ip_seconds, key_seconds[0] if key_seconds else 0

    async def auth_failed(self, *, ip: str, key_prefix: str | None) -> int:
        """Count a failed AUTH; returns the seconds of the IP lockout it starts (0: none)."""
        if key_prefix is not None:
            subject = _key_subject(key_prefix, ip)
            await _open_on_error(self._count_failure(subject, self.limits.max_key_failures), 0)
        return await _open_on_error(self._count_failure(f"ip:{ip}", self.limits.max_ip_failures), 0)

    async def message_allowed(self, *, api_key_id: str, per_minute: int) -> RateLimitResult:
        """Count one message against the key's rate."""
        allowed = RateLimitResult(True, per_minute, per_minute, 0)
        hit = self._rate.hit(f"key:{api_key_id}", limit=per_minute, window=RATE_WINDOW_SECONDS)
        return await _open_on_error(hit, allowed)

    async def _count_failure(self, subject: str, limit: int) -> int:
        """Count a failure; the `limit`-th one within the lockout window locks `subject`."""
        seconds = self.limits.lockout_seconds
        result = await self._failures.hit(subject, limit=limit - 1, window=seconds)
        if result.allowed:
            return 0
        until = clock.now().timestamp() + seconds
        # The value is the end of the lockout, read against Columba's clock; the expiry only
        # tidies up.
        await self.redis.set(self._lock_key(subject), str(until), ex=seconds + 1)
        log.warning("SMTP AUTH: %s locked out for %d s after repeated failures", subject, seconds)
        return seconds

    async def _locked_for(self, subject: str) -> int:
        """Seconds left on a lockout of `subject`."""
        return _seconds_left(await self.redis.get(self._lock_key(subject)))

    @staticmethod
    def _lock_key(subject: str) -> str:
        return f"{_PREFIX}:lock:{subject}"


def client_network(ip: str) -> str:
    """The network a client address counts in: itself for IPv4 (also when IPv4-mapped), its
    /64 for IPv6; an unparsable peer (never from a socket) counts as itself."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_NETWORK_PREFIX), strict=False))
    return str(address)


def _seconds_left(value: bytes | str | None) -> int:
    """Seconds left on a lockout whose stored value (its end) is `value`; 0 for none."""
    if value is None:
        return 0
    return max(0, math.ceil(float(value) - clock.now().timestamp()))


def _key_subject(prefix: str, ip: str) -> str:
    """What a key's failures from `ip` are counted under."""
    return f"key:{prefix}:{client_network(ip)}"


async def _open_on_error(check: Awaitable[T], fallback: T) -> T:
    """The check's result, or `fallback` (let the client through) when Redis fails."""
    try:
        return await check
    except (RedisError, OSError) as exc:
        _UNPROTECTED.warning(
            "SMTP protections unavailable (Redis: %s); letting the client through", exc
        )
        return fallback
