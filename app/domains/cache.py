"""Sending domains, cached per process for at most AUTH_CACHE_TTL (≤ 1 s).

Every send asks which of its account's domains covers the From address; the answer changes
only when a domain is added, verified or removed, which announces an invalidation
(app/core/signals.py). Only found domains are cached, so a domain added a moment ago is found
at once. The cached objects are detached from any session and only read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from app.core import cache
from app.core.cache import TtlCache
from app.core.signals import DOMAINS
from app.domains.models import Domain

DEFAULT_TTL = 1.0


class DomainCache:
    """(account id, From domain) → the sending domain that covers it."""

    def __init__(self, ttl: float = DEFAULT_TTL) -> None:
        self._entries: TtlCache[tuple[str, str], Domain] = TtlCache(ttl)
        self._loading: dict[tuple[str, str], asyncio.Future[Domain | None]] = {}

    def configure(self, ttl: float) -> None:
        """Set how long entries live (AUTH_CACHE_TTL); forgets what was cached."""
        self._entries = TtlCache(ttl)

    def get(self, account_id: str, email_domain: str) -> Domain | None:
        """The cached domain, if fresh."""
        return self._entries.get((account_id, email_domain))

    async def lookup(
        self, account_id: str, email_domain: str, load: Callable[[], Awaitable[Domain | None]]
    ) -> Domain | None:
        """The cached domain, or what `load` finds (cached when found); concurrent misses of
        one entry share one load, so an expiry under load costs one query, not one each."""
        key = (account_id, email_domain)
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        waiting = self._loading.get(key)
        if waiting is not None:
            try:
                return await asyncio.shield(waiting)
            except Exception:  # the other load's trouble: try in our own session
                return await load()
        future: asyncio.Future[Domain | None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            domain = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._loading.pop(key, None)
        if domain is not None:
            self._entries.put(key, domain)
        future.set_result(domain)
        return domain

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
