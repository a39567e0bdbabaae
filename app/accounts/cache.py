"""API keys and their accounts, cached per process for at most AUTH_CACHE_TTL (≤ 1 s).

Authenticating is on every request's path; reading the key and its account from the database
each time cost two round trips and an ORM load. A cached key is still checked against its
secret's hash on every request. Unknown, wrong and revoked keys are never cached, so a key
created a moment ago works at once and failures always reach the database. A revocation
reaches this process through an announced invalidation (app/core/signals.py), or at the
latest when the entry expires: the documented bound is the TTL.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from app.accounts import service as accounts
from app.accounts.service import Principal, hash_secret, split_key
from app.core import cache, clock
from app.core.cache import SingleFlight, TtlCache
from app.core.db import Database
from app.core.signals import KEY

log = logging.getLogger(__name__)

LAST_USED_SECONDS = accounts.LAST_USED_RESOLUTION.total_seconds()


@dataclass(frozen=True, slots=True)
class _Entry:
    """What a cached key is checked against, and who it is."""

    secret_hash: str
    principal: Principal


class KeyCache:
    """Authenticates presented keys, reading the database only on a miss."""

    def __init__(self, database: Database, *, ttl: float) -> None:
        self.database = database
        self._entries: TtlCache[str, _Entry] = TtlCache(ttl)
        self._loading: SingleFlight[str, _Entry | None] = SingleFlight()
        self._last_touch: dict[str, float] = {}  # key id → when its last_used_at was written
        self._touches: set[asyncio.Task[None]] = set()
        cache.register(self)

    async def authenticate(self, plaintext: str) -> Principal | None:
        """The principal for a presented key; None when it is unknown, wrong or revoked."""
        parts = split_key(plaintext)
        if parts is None:
            return None
        prefix, secret = parts
        entry = self._entries.get(prefix) or await self._load(prefix)
        if entry is None or not hmac.compare_digest(entry.secret_hash, hash_secret(secret)):
            return None
        self._record_use(entry.principal)
        return entry.principal

    async def _load(self, prefix: str) -> _Entry | None:
        """Read the key; concurrent misses for one prefix share one read."""
        return await self._loading.run(prefix, lambda: self._read(prefix))

    async def _read(self, prefix: str) -> _Entry | None:
        """The key and account from the database, cached when active."""
        async with self.database.session() as session:
            found = await accounts.principal_by_prefix(session, prefix=prefix)
        if found is None:
            return None
        secret_hash, principal = found
        entry = _Entry(secret_hash, principal)
        self._entries.put(prefix, entry)
        if principal.api_key.last_used_at is not None:
            self._last_touch.setdefault(principal.api_key.id, _monotonic_of_last_use(principal))
        return entry

    def _record_use(self, principal: Principal) -> None:
        """Write the key's last_used_at at most once a minute, in the background: a read
        must not wait for a write (nor hold a second pooled connection)."""
        key_id = principal.api_key.id
        now = time.monotonic()
        if now - self._last_touch.get(key_id, -LAST_USED_SECONDS) < LAST_USED_SECONDS:
            return
        self._last_touch[key_id] = now
        task = asyncio.create_task(self._touch(key_id))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _touch(self, key_id: str) -> None:
        """Set last_used_at; a failure is logged (it is bookkeeping, not a guarantee)."""
        try:
            async with self.database.session() as session:
                await accounts.touch_key(session, api_key_id=key_id)
                await session.commit()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not record a key's last use: %s", exc)

    def invalidate(self, kind: str, key: str) -> None:
        """Forget a key by prefix ('' forgets every key)."""
        if kind != KEY:
            return
        if key:
            self._entries.drop(key)
        else:
            self._entries.clear()

    def clear(self) -> None:
        """Forget every key."""
        self._entries.clear()

    async def close(self) -> None:
        """Let pending last-used writes finish."""
        if self._touches:
            await asyncio.gather(*self._touches, return_exceptions=True)


def _monotonic_of_last_use(principal: Principal) -> float:
    """The stored last use, on the monotonic clock (so a recent one is not written again)."""
    last = principal.api_key.last_used_at
    assert last is not None
    return time.monotonic() - (clock.now() - last).total_seconds()
