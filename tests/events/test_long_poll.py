"""Long polls (`GET /v1/events?wait=`) hold no pooled connection while they wait, and are
bounded per API key and per process (issue 10, item 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from app.core.config import Settings
from app.core.db import Database
from app.events.waiting import LongPolls
from tests.fakes.dns import FakeDNS
from tests.support import ApiServer, Sender, make_sender
from tests.test_end_to_end import send


def long_polls(api: ApiServer) -> LongPolls:
    """The API's count of waiting polls."""
    polls: LongPolls = api.app.state.long_polls
    return polls


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until `condition()` holds."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (watching the server's in-process state)
            await asyncio.sleep(0.02)


async def head(http: httpx.AsyncClient, sender: Sender) -> str:
    """The feed's current end for the sender: a cursor nothing has passed yet."""
    response = await http.get("/v1/events", headers=sender.headers)
    assert response.status_code == 200, response.text
    cursor: str = response.json()["next_cursor"]
    return cursor


def poll(http: httpx.AsyncClient, sender: Sender, **params: Any) -> asyncio.Task[httpx.Response]:
    """A long poll, running in the background."""
    return asyncio.create_task(http.get("/v1/events", params=params, headers=sender.headers))


async def test_waiting_polls_leave_the_pool_to_other_requests(
    settings: Settings, sender: Sender, db: Database, dns_server: FakeDNS
) -> None:
    """Six polls wait on a pool of two connections; health checks and a send of another
    account go through while every poll still waits, and an event ends the waits."""
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    small = settings.model_copy(
        update={
            "db_pool_size": 2,
            "db_max_overflow": 0,
            "long_poll_max": 6,
            "long_poll_max_per_key": 6,
        }
    )
    async with (
        ApiServer.running(small) as api,
        httpx.AsyncClient(base_url=api.url, timeout=60) as http,
    ):
        after = await head(http, sender)
        polls = [poll(http, sender, after=after, wait=30) for _ in range(6)]
        await until(lambda: long_polls(api).waiting.total() == 6)
        for _ in range(3):
            assert (await http.get("/healthz")).status_code == 200
        await send(http, other, to=["x@example.test"])
        assert not any(task.done() for task in polls)

        await send(http, sender, to=["y@example.test"])  # an event for the polling account
        answers = await asyncio.gather(*polls)
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert [e["email"] for e in answer.json()["events"]] == ["y@example.test"]


async def test_polls_past_either_bound_are_refused_with_429(
    settings: Settings, sender: Sender, db: Database, dns_server: FakeDNS
) -> None:
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    bounded = settings.model_copy(update={"long_poll_max": 3, "long_poll_max_per_key": 2})
    async with (
        ApiServer.running(bounded) as api,
        httpx.AsyncClient(base_url=api.url, timeout=60) as http,
    ):
        await send(http, sender, to=["old@example.test"])
        mine, theirs = await head(http, sender), await head(http, other)
        waiting = [poll(http, sender, after=mine, wait=30) for _ in range(2)]
        await until(lambda: long_polls(api).waiting.total() == 2)

        per_key = await http.get(
            "/v1/events", params={"after": mine, "wait": 30}, headers=sender.headers
        )
        assert per_key.status_code == 429
        assert per_key.headers["retry-after"] == "5"
        [error] = per_key.json()["errors"]
        assert error["field"] == "wait"
        assert "this API key already has 2 requests waiting" in error["message"]
        # A request that does not wait, or finds events at once, needs no place.
        for params in ({"after": mine}, {"wait": 30}):
            response = await http.get("/v1/events", params=params, headers=sender.headers)
            assert response.status_code == 200, response.text

        waiting.append(poll(http, other, after=theirs, wait=30))
        await until(lambda: long_polls(api).waiting.total() == 3)
        per_process = await http.get(
            "/v1/events", params={"after": theirs, "wait": 30}, headers=other.headers
        )
        assert per_process.status_code == 429
        assert "3 requests are already waiting" in per_process.json()["errors"][0]["message"]

        await send(http, sender, to=["a@example.test"])
        await send(http, other, to=["b@example.test"])
        answers = await asyncio.gather(*waiting)
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert long_polls(api).waiting.total() == 0
        again = await http.get(
            "/v1/events", params={"after": theirs, "wait": 30}, headers=other.headers
        )
        assert again.status_code == 200
        assert [e["email"] for e in again.json()["events"]] == ["b@example.test"]
