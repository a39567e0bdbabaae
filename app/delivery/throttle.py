"""Per-destination limits shared by every worker process through Redis.

A destination is the set of MX hosts a domain resolves to, so gmail.com and googlemail.com
share one budget. Each destination has a ceiling on concurrent connections and, optionally,
on messages per second; a destination that answers 421 or 4.7.x ("slow down") gets half
its budget for a while (adaptive slow-down), recovering on its own when the deferrals stop.

Redis only coordinates: while it is unreachable, each process keeps to the destination's
connection limit on its own (no rate limit, no slow-down), and the bookkeeping after a
transaction (giving a slot back, asking for one) never fails the transaction. A delivery
the MX has taken must be recorded, not retried because Redis was away (issue 17).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.throttled_log import ThrottledWarning
from app.delivery.replies import Reply

KEY_PREFIX = "columba:throttle"
CONNECTION_LEASE_SECONDS = 30  # a dead worker's slots free themselves after this (renewed)
SLOWDOWN_SECONDS = 600  # how long a slow-down lasts after the last deferral that caused it
MIN_FACTOR = 1 / 16
WANTED_MILLISECONDS = 1000  # a waiter renews its demand while it waits

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DestinationLimits:
    """Budget of one destination; rate 0 means no per-second limit."""

    max_connections: int = 10
    rate: float = 0.0
    burst: int = 20


@dataclass(frozen=True, slots=True)
class ProviderRule:
    """Limits for destinations whose MX hosts end with one of `suffixes`."""

    name: str
    suffixes: tuple[str, ...]
    limits: DestinationLimits


# Conservative defaults for large mailbox providers, in the spirit of KumoMTA's shaping
# rules and the providers' published sender guidelines; operators override them in settings.
PROVIDERS: tuple[ProviderRule, ...] = (
    ProviderRule("google", ("google.com", "googlemail.com"), DestinationLimits(20, 50.0, 100)),
    ProviderRule(
        "microsoft",
        ("protection.outlook.com", "outlook.com", "hotmail.com"),
        DestinationLimits(10, 20.0, 40),
    ),
    ProviderRule("yahoo", ("yahoodns.net", "yahoo.com", "aol.com"), DestinationLimits(8, 10.0, 20)),
    ProviderRule("apple", ("icloud.com", "me.com", "mac.com"), DestinationLimits(10, 10.0, 20)),
    ProviderRule("comcast", ("comcast.net",), DestinationLimits(5, 5.0, 10)),
)


@dataclass(frozen=True, slots=True)
class DestinationKey:
    """A destination's identity for throttling: its MX host set, and the provider if known."""

    name: str
    limits: DestinationLimits

    @property
    def redis_id(self) -> str:
        """Short stable id for Redis keys."""
        return hashlib.sha1(self.name.encode(), usedforsecurity=False).hexdigest()[:16]


def destination_key(
    hosts: Sequence[str], default: DestinationLimits, providers: Sequence[ProviderRule] = PROVIDERS
) -> DestinationKey:
    """The throttling identity of a set of MX hosts."""
    names = sorted({host.lower().rstrip(".") for host in hosts})
    for provider in providers:
        if any(name == s or name.endswith("." + s) for name in names for s in provider.suffixes):
            return DestinationKey(f"provider:{provider.name}", provider.limits)
    return DestinationKey("mx:" + ",".join(names), default)


def asks_to_slow_down(reply: Reply) -> bool:
    """421, or a 4.7.x deferral: the receiver wants less traffic from us (RFC 3463 X.7)."""
    return reply.code == 421 or (reply.is_transient and (reply.enhanced or "").startswith("4.7."))


# Slots are a sorted set of lease tokens scored by expiry: expired ones (a crashed worker's)
# are dropped before counting, so the limit can never leak away.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""

# GCRA (generic cell rate algorithm): one key holding the theoretical arrival time.
# Returns 0 when the message may go now, else the milliseconds to wait.
_RATE = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed_at = tat - interval * burst
if allowed_at > now then return math.ceil(allowed_at - now) end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(interval * (burst + 1)) + 1000)
return 0
"""


class DestinationThrottle:
    """Connection slots, message rate and slow-down per destination, in Redis; each process's
    own slots are also counted here, the limit it keeps to while Redis is unreachable."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._rate = redis.register_script(_RATE)
        self._held: defaultdict[str, set[str]] = defaultdict(set)  # destination → tokens
        self._outage = ThrottledWarning(log)  # while Redis is away, say so now and then

    def _key(self, destination: DestinationKey, what: str) -> str:
        return f"{KEY_PREFIX}:{destination.redis_id}:{what}"

    async def _or(self, fallback: T, call: Awaitable[T]) -> T:
        """`call`'s result, or `fallback` when Redis cannot be reached."""
        try:
            return await call
        except (RedisError, OSError) as exc:
            self._outage.warning("destination limits kept per process (Redis unavailable): %s", exc)
            return fallback

    async def factor(self, destination: DestinationKey) -> float:
        """1.0 normally; smaller while the destination has asked us to slow down."""
        value = await self._or(None, self.redis.get(self._key(destination, "factor")))
        return float(value) if value is not None else 1.0

    async def acquire_connection(self, destination: DestinationKey, token: str) -> bool:
        """Take a connection slot for `token`, if the (slowed-down) limit allows one; without
        Redis, if this process holds fewer than the limit."""
        held = self._held[destination.name]
        factor = await self.factor(destination)
        limit = max(1, int(destination.limits.max_connections * factor))
        now = time.time()
        granted = await self._or(
            len(held) < destination.limits.max_connections,
            self._acquire(
                keys=[self._key(destination, "conns")],
                args=[now, now + CONNECTION_LEASE_SECONDS, limit, token, CONNECTION_LEASE_SECONDS],
            ),
        )
        if granted:
            held.add(token)
        return bool(granted)

    async def renew_connection(self, destination: DestinationKey, token: str) -> None:
        """Keep a long-lived connection's slot."""
        expiry = time.time() + CONNECTION_LEASE_SECONDS
        key = self._key(destination, "conns")
        await self._or(0, self.redis.zadd(key, {token: expiry}, xx=True))

    async def renew_connections(self, held: Sequence[tuple[DestinationKey, str]]) -> None:
        """Renew many slots in one round trip."""
        if held:
            await self._or(None, self._renew_all(held))

    async def _renew_all(self, held: Sequence[tuple[DestinationKey, str]]) -> None:
        expiry = time.time() + CONNECTION_LEASE_SECONDS
        async with self.redis.pipeline(transaction=False) as pipe:
            for destination, token in held:
                pipe.zadd(self._key(destination, "conns"), {token: expiry}, xx=True)
                pipe.expire(self._key(destination, "conns"), CONNECTION_LEASE_SECONDS)
            await pipe.execute()

    async def release_connection(self, destination: DestinationKey, token: str) -> None:
        """Give a slot back."""
        self._held[destination.name].discard(token)
        await self._or(0, self.redis.zrem(self._key(destination, "conns"), token))

    async def rate_wait(self, destination: DestinationKey) -> float:
        """Seconds to wait before the next message may go (0: now, and it is counted)."""
        limits = destination.limits
        if limits.rate <= 0:
            return 0.0
        rate = limits.rate * await self.factor(destination)
        interval_ms = 1000.0 / rate
        wait_ms = await self._or(
            0,
            self._rate(
                keys=[self._key(destination, "rate")],
                args=[int(time.time() * 1000), interval_ms, max(0, limits.burst - 1)],
            ),
        )
        return float(wait_ms) / 1000.0

    async def want(self, destination: DestinationKey) -> None:
        """Say that a process is waiting for a connection slot of this destination."""
        key = self._key(destination, "wanted")
        await self._or(None, self.redis.set(key, 1, px=WANTED_MILLISECONDS))

    async def wanted(self, destination: DestinationKey) -> bool:
        """Whether some process waits for a slot: holders then close idle connections."""
        return bool(await self._or(0, self.redis.exists(self._key(destination, "wanted"))))

    async def slow_down(self, destination: DestinationKey) -> float:
        """Halve the destination's budget for SLOWDOWN_SECONDS; returns the new factor."""
        factor = max(MIN_FACTOR, await self.factor(destination) / 2)
        key = self._key(destination, "factor")
        await self._or(None, self.redis.set(key, factor, ex=SLOWDOWN_SECONDS))
        return factor
