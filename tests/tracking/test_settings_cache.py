"""The send path's per-process cache of accounts' tracking settings: one read per TTL, a
change through the API reaches the next send at once (here and in other processes), and one
written behind the cache within AUTH_CACHE_TTL."""

from __future__ import annotations

import asyncio
import time

import httpx
from sqlalchemy import update

from app.core import signals
from app.core.db import Database
from app.messages.models import Message
from app.tracking.models import TrackingSettings
from tests.support import ApiServer, Sender, statements_run


async def send(client: httpx.AsyncClient, sender: Sender) -> str:
    """One accepted send; its message id."""
    body = {"from": sender.address(), "to": ["x@example.test"], "subject": "Hi", "text": "Hi"}
    response = await client.post("/v1/send", json=body, headers=sender.headers)
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


async def open_tracking_kept(db: Database, message_id: str) -> bool | None:
    """The open-tracking default the message kept at accept time; None when it kept none."""
    async with db.session() as session:
        message = await session.get_one(Message, message_id)
    kept = message.settings.get("account_tracking")
    return None if kept is None else bool(kept["open_tracking"]["enable"])


async def enable_open_tracking_behind_the_cache(db: Database, sender: Sender) -> None:
    """Change the account's settings as another process would: in the database only."""
    async with db.session() as session:
        session.add(TrackingSettings(account_id=sender.account_id))
        await session.flush()
        await session.execute(
            update(TrackingSettings)
            .where(TrackingSettings.account_id == sender.account_id)
            .values(open_enabled=True)
        )
        await session.commit()


async def test_sends_within_the_ttl_read_the_settings_once(
    client: httpx.AsyncClient, sender: Sender, api: ApiServer
) -> None:
    with statements_run(api.app.state.db) as run:
        await asyncio.gather(*(send(client, sender) for _ in range(20)))
    reads = [statement for statement in run if "FROM tracking_settings" in statement]
    # 20 concurrent sends of an account share one read (two if the TTL ran out meanwhile).
    assert 1 <= len(reads) <= 2


async def test_a_patch_reaches_the_next_send_at_once(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    assert await open_tracking_kept(db, await send(client, sender)) is None  # cached: all off
    response = await client.patch(
        "/v3/tracking_settings/open", json={"enabled": True}, headers=sender.headers
    )
    assert response.status_code == 200, response.text
    assert await open_tracking_kept(db, await send(client, sender)) is True


async def test_a_change_announced_elsewhere_reaches_the_next_send_at_once(
    client: httpx.AsyncClient, sender: Sender, db: Database, api: ApiServer
) -> None:
    await asyncio.wait_for(api.app.state.invalidations.subscribed.wait(), 10)
    assert await open_tracking_kept(db, await send(client, sender)) is None
    await enable_open_tracking_behind_the_cache(db, sender)
    await signals.announce_to(api.app.state.queue.redis_url, signals.TRACKING, sender.account_id)
    await asyncio.sleep(0.1)  # the announcement travels through Redis
    assert await open_tracking_kept(db, await send(client, sender)) is True


async def test_a_change_nobody_announced_is_seen_within_the_ttl(
    client: httpx.AsyncClient, sender: Sender, db: Database, api: ApiServer
) -> None:
    ttl = api.settings.auth_cache_ttl.total_seconds()
    assert 0 < ttl <= 1
    assert await open_tracking_kept(db, await send(client, sender)) is None
    await enable_open_tracking_behind_the_cache(db, sender)
    changed_at = time.monotonic()
    while await open_tracking_kept(db, await send(client, sender)) is not True:
        assert time.monotonic() - changed_at <= ttl + 0.5, "change not seen within the TTL"
        await asyncio.sleep(0.05)
