"""GET /v1/events: commit order, cursors that never skip, filters, long polling."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import pytest

from app.core.db import Database
from app.events import service as events
from app.events.models import EventType
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_sender
from tests.test_end_to_end import Deliver, send


async def read_page(client: httpx.AsyncClient, sender: Sender, **params: Any) -> dict[str, Any]:
    """One page of the feed."""
    response = await client.get("/v1/events", params=params, headers=sender.headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_feed_lists_events_in_order_with_a_cursor(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    accepted = await send(client, sender, to=["a@example.test", "b@example.test"])
    await deliver()
    page = await read_page(client, sender, limit=3)
    assert [e["type"] for e in page["events"]] == ["processed", "processed", "delivered"]
    assert page["has_more"] is True
    rest = await read_page(client, sender, after=page["next_cursor"])
    assert [e["type"] for e in rest["events"]] == ["delivered"]
    assert rest["has_more"] is False
    every = page["events"] + rest["events"]
    assert {e["email"] for e in every} == {"a@example.test", "b@example.test"}
    assert all(e["message_id"] == accepted["id"] for e in every)
    positions = [int(e["cursor"]) for e in every]
    assert positions == sorted(positions)
    empty = await read_page(client, sender, after=rest["next_cursor"])
    assert empty == {"events": [], "next_cursor": rest["next_cursor"], "has_more": False}


async def test_filters_move_the_cursor_past_what_they_leave_out(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    first = await send(client, sender, to=["a@example.test"])
    await send(client, sender, to=["b@example.test"])
    await deliver()
    delivered = await read_page(client, sender, type="delivered")
    assert [e["type"] for e in delivered["events"]] == ["delivered", "delivered"]
    everything = await read_page(client, sender)
    assert delivered["next_cursor"] == everything["next_cursor"]
    one = await read_page(client, sender, message_id=first["id"], type="processed,delivered")
    assert [e["email"] for e in one["events"]] == ["a@example.test", "a@example.test"]
    bad_type = await client.get("/v1/events?type=nope", headers=sender.headers)
    assert bad_type.status_code == 400
    assert bad_type.json()["errors"][0]["field"] == "type"
    bad_cursor = await client.get("/v1/events?after=abc", headers=sender.headers)
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["errors"][0]["field"] == "after"


async def test_accounts_see_only_their_own_events(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    dns_server: FakeDNS,
    settings: Any,
) -> None:
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    await send(client, sender, to=["a@example.test"])
    assert (await read_page(client, other))["events"] == []
    assert len((await read_page(client, sender))["events"]) == 1


async def test_long_poll_returns_as_soon_as_an_event_commits(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    start = await read_page(client, sender)
    began = time.monotonic()
    waiting = asyncio.create_task(read_page(client, sender, after=start["next_cursor"], wait=10))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await send(client, sender, to=["late@example.test"])
    page = await waiting
    assert [e["email"] for e in page["events"]] == ["late@example.test"]
    assert time.monotonic() - began < 5
    empty_began = time.monotonic()
    empty = await read_page(client, sender, after=page["next_cursor"], wait=1)
    assert empty["events"] == []
    assert time.monotonic() - empty_began >= 1
    too_long = await client.get("/v1/events?wait=31", headers=sender.headers)
    assert too_long.status_code == 400


async def _write(db: Database, account_id: str, writer: int, count: int) -> list[int]:
    """Events one at a time, each transaction pausing between INSERT and COMMIT so that
    concurrent writers commit out of id order."""
    written: list[int] = []
    for index in range(count):
        async with db.session() as session:
            new = events.NewEvent(
                account_id=account_id, type=EventType.PROCESSED, data={"w": writer, "i": index}
            )
            written.extend(await events.record(session, [new]))
            await asyncio.sleep(random.uniform(0, 0.01))
            await session.commit()
    return written


async def test_a_reader_sees_every_event_exactly_once_under_concurrent_writers(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    writers = [asyncio.create_task(_write(db, sender.account_id, n, 25)) for n in range(8)]
    seen: list[int] = []
    cursor = "0"
    while True:
        done = all(task.done() for task in writers)
        page = await read_page(client, sender, after=cursor, limit=7)
        seen.extend(e["id"] for e in page["events"])
        cursor = page["next_cursor"]
        if done and not page["events"]:
            break
        await asyncio.sleep(0.005)
    written = [event_id for task in writers for event_id in task.result()]
    assert len(written) == 200
    assert sorted(seen) == sorted(written)  # none skipped
    assert len(seen) == len(set(seen))  # none twice


async def test_a_lower_id_committed_late_is_not_skipped(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    """The case a plain `id > cursor` read gets wrong (PostgreSQL commits out of id order;
    SQLite has one writer at a time, so it cannot happen there)."""
    if db.settings.is_sqlite:
        pytest.skip("SQLite serialises writers: ids are always committed in order")
    new = events.NewEvent(account_id=sender.account_id, type=EventType.PROCESSED)
    async with db.session() as slow, db.session() as fast:
        # Different counter shards: on one shard `fast` would wait for `slow`'s row lock
        # (this task holds both transactions, so it would wait forever).
        slow.info["stats_shard"], fast.info["stats_shard"] = 0, 1
        [low] = await events.record(slow, [new])
        [high] = await events.record(fast, [new])
        await fast.commit()
        page = await read_page(client, sender)
        assert [e["id"] for e in page["events"]] == [high]
        await slow.commit()
    rest = await read_page(client, sender, after=page["next_cursor"])
    assert [e["id"] for e in rest["events"]] == [low]
    assert low < high
