"""A small per-process cache whose entries live a fixed time, and the registry that lets one
invalidation reach every cache of the process.

The API reads keys, accounts and sending domains on every request; these caches take those
reads off the hot path. Staleness is bounded by the TTL (at most a second for keys: a revoked
key stops working everywhere within it) and usually shortened by invalidations announced
through Redis (app/core/signals.py).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
AccountKey = TypeVar("AccountKey", bound=tuple[str, ...])


class Invalidatable(Protocol):
    """A cache that can drop what an invalidation names."""

    def invalidate(self, kind: str, key: str) -> None:
        """Drop the entries `kind`/`key` names ('' drops every entry of that kind)."""

    def clear(self) -> None:
        """Drop everything."""


_caches: weakref.WeakSet[Invalidatable] = weakref.WeakSet()


def register(cache: Invalidatable) -> None:
    """Let invalidations reach `cache` (held weakly: a dropped app takes its caches along)."""
    _caches.add(cache)


def invalidate(kind: str, key: str) -> None:
    """Drop `kind`/`key` from every cache of this process."""
    for cache in list(_caches):
        cache.invalidate(kind, key)


def clear_all() -> None:
    """Drop every entry of every cache (after invalidations may have been missed)."""
    for cache in list(_caches):
        cache.clear()


def configure_account_caches(ttl: float) -> None:
    """Set how long every AccountCache of the process keeps entries (AUTH_CACHE_TTL)."""
    for cache in list(_caches):
        if isinstance(cache, AccountCache):
            cache.configure(ttl)


class TtlCache(Generic[K, V]):
    """Values that expire `ttl` seconds after they were stored; at most `max_entries`."""

    def __init__(
        self, ttl: float, *, max_entries: int = 10_000, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._now = now
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        """The value, or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._now():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        """Store `value` for the TTL, evicting the oldest entry when full."""
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._now() + self.ttl, value)

    def drop(self, key: K) -> None:
        """Forget `key`."""
        self._entries.pop(key, None)

    def drop_where(self, predicate: Callable[[K], bool]) -> None:
        """Forget every key `predicate` accepts."""
        for key in [k for k in self._entries if predicate(k)]:
            del self._entries[key]

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[K, V]):
    """Concurrent loads of one key share the first caller's: when a cached entry expires
    under load, the database is asked once, not once per waiting request."""

    def __init__(self) -> None:
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def run(
        self, key: K, load: Callable[[], Awaitable[V]], *, alone_on_error: bool = False
    ) -> V:
        """`load()`'s result, shared with whoever asks for `key` meanwhile. Its error reaches
        them too, unless `alone_on_error`: then each tries its own `load()`."""
        waiting = self._loading.get(key)
        if waiting is not None:
            try:
                return await asyncio.shield(waiting)
            except Exception:
                if not alone_on_error:
                    raise
                return await load()
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(value)
        return value


class AccountCache(Generic[AccountKey, V]):
    """One kind of an account's settings read on every send, cached per process.

    Keys start with the account id; an invalidation of `kind` (app/core/signals.py) naming
    the account drops its entries, and the TTL bounds staleness when one is lost. Values
    are only read: they are shared by every request until they expire."""

    def __init__(self, kind: str, ttl: float = 1.0) -> None:
        self.kind = kind
        self._entries: TtlCache[AccountKey, V] = TtlCache(ttl)
        self._loading: SingleFlight[AccountKey, V | None] = SingleFlight()
        register(self)

    def configure(self, ttl: float) -> None:
        """Set how long entries live; forgets what was cached."""
        self._entries = TtlCache(ttl)

    async def lookup(self, key: AccountKey, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """The cached value, or what `load` finds (kept unless None); concurrent misses of
        one entry share one load, so an expiry under load costs one query, not one each."""
        cached = self._entries.get(key)
        if cached is not None:
            return cached

        async def load_and_keep() -> V | None:
            value = await load()
            if value is not None:
                self._entries.put(key, value)
            return value

        # Another request's failed load (its session's trouble): try in our own session.
        return await self._loading.run(key, load_and_keep, alone_on_error=True)

    def invalidate(self, kind: str, key: str) -> None:
        """Forget an account's entries ('' forgets every account's)."""
        if kind != self.kind:
            return
        if key:
            self._entries.drop_where(lambda entry: entry[0] == key)
        else:
            self._entries.clear()

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
