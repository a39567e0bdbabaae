"""The per-process cache of keys and domains: a revocation takes effect everywhere within
AUTH_CACHE_TTL (1 s), at once when it is announced, and failures are never cached."""

from __future__ import annotations

import asyncio
import time

import httpx
from sqlalchemy import update

from app.accounts.models import ApiKey
from app.core import clock, signals
from app.core.db import Database
from app.domains.models import Domain
from tests.support import ApiServer, Sender, make_key

MESSAGE = {"subject": "Hi", "text": "Hello", "to": ["x@example.test"]}


async def _send(client: httpx.AsyncClient, sender: Sender, key: str | None = None) -> int:
    """The status of one send with the sender's key (or `key`)."""
    headers = {"Authorization": f"Bearer {key}"} if key else sender.headers
    body = {"from": sender.address(), **MESSAGE}
    return (await client.post("/v1/send", json=body, headers=headers)).status_code


async def _revoke_behind_the_cache(db: Database, sender: Sender) -> None:
    """Revoke as another process would: in the database, announcing nothing here."""
    async with db.session() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.prefix == sender.key.split(".")[1])
            .values(revoked_at=clock.now())
        )
        await session.commit()


async def test_a_revocation_nobody_announced_takes_effect_within_the_ttl(
    client: httpx.AsyncClient, sender: Sender, db: Database, api: ApiServer
) -> None:
    ttl = api.settings.auth_cache_ttl.total_seconds()
    assert 0 < ttl <= 1
    assert await _send(client, sender) == 202  # cached now
    await _revoke_behind_the_cache(db, sender)
    revoked_at = time.monotonic()
    while await _send(client, sender) != 401:
        assert time.monotonic() - revoked_at <= ttl + 0.5, "revocation not seen within the TTL"
        await asyncio.sleep(0.05)


async def test_an_announced_revocation_takes_effect_at_once(
    client: httpx.AsyncClient, sender: Sender, db: Database, api: ApiServer
) -> None:
    await asyncio.wait_for(api.app.state.invalidations.subscribed.wait(), 10)
    assert await _send(client, sender) == 202
    await _revoke_behind_the_cache(db, sender)
    await signals.announce_to(api.app.state.queue.redis_url, signals.KEY, sender.key.split(".")[1])
    await asyncio.sleep(0.1)  # the announcement travels through Redis
    assert await _send(client, sender) == 401


async def test_a_new_key_works_at_once_and_a_wrong_secret_never_does(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    prefix = sender.key.split(".")[1]
    assert await _send(client, sender, key=f"SG.{prefix}.{'A' * 43}") == 401
    assert await _send(client, sender) == 202  # the failure above was not cached
    assert await _send(client, sender, key=f"SG.{prefix}.{'A' * 43}") == 401  # nor the hit
    fresh = await make_key(db, account=sender.account_name, scopes=None)
    assert await _send(client, sender, key=fresh) == 202


async def test_an_announced_domain_change_takes_effect_at_once(
    client: httpx.AsyncClient, sender: Sender, db: Database, api: ApiServer
) -> None:
    """Unverifying behind the cache, then announcing: the next send sees the change."""
    assert api.settings.require_verified_domains
    await asyncio.wait_for(api.app.state.invalidations.subscribed.wait(), 10)
    assert await _send(client, sender) == 202
    async with db.session() as session:
        await session.execute(
            update(Domain).where(Domain.id == sender.domain.id).values(verified_at=None)
        )
        await session.commit()
    await signals.announce_to(api.app.state.queue.redis_url, signals.DOMAINS, sender.account_id)
    await asyncio.sleep(0.1)
    assert await _send(client, sender) == 403
