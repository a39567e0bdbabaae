"""Sending domains, cached per process for at most AUTH_CACHE_TTL (≤ 1 s).

Every send asks which of its account's domains covers the From address; the answer changes
only when a domain is added, verified or removed, which announces an invalidation
(app/core/signals.py). Only found domains are cached, so a domain added a moment ago is found
at once. The cached objects are detached from any session and only read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.core import cache
from app.core.cache import SingleFlight, TtlCache
from app.core.signals import DOMAINS
from app.domains.models import Domain

DEFAULT_TTL = 1.0


class DomainCache:
    """(account id, From domain) → the sending domain that covers it."""

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self._entries: TtlCache[tuple[str, str], Domain] = TtlCache(ttl)
        self._loading: SingleFlight[tuple[str, str], Domain | None] = SingleFlight()

    def configure(self, ttl: float) -> None:
        """Set how long entries live (AUTH_CACHE_TTL); forgets what was cached."""
        self._entries = TtlCache(ttl)

    async def lookup(
        self, account_id: str, email_domain: str, load: Callable[[], Awaitable[Domain | None]]
    ) -> Domain | None:
        """The cached domain, or what `load` finds (cached when found); concurrent misses of
        one entry share one load, so an expiry under load costs one query, not one each."""
        key = (account_id, email_domain)
        cached = self._entries.get(key)
        if cached is not None:
            return cached

        async def load_and_keep() -> Domain | None:
            domain = await load()
            if domain is not None:
                self._entries.put(key, domain)
            return domain

        # Another request's failed load (its session's trouble): try in our own session.
        return await self._loading.run(key, load_and_keep, alone_on_error=True)

    def invalidate(self, kind: str, key: str) -> None:
        """Forget an account's domains ('' forgets every account's)."""
        if kind != DOMAINS:
            return
        if key:
            self._entries.drop_where(lambda entry: entry[0] == key)
        else:
            self._entries.clear()

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()


sending_domains = DomainCache()  # one per process, like the engine's connection pool
cache.register(sending_domains)
