"""The per-key rate limit holds across API replicas (it is counted in Redis) and answers 429
in SendGrid's shape with the X-RateLimit-* headers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from app.core import clock
from app.core.config import Settings
from tests.support import ApiServer, Sender


@pytest.fixture
def window_start(travel: Callable[[timedelta], None]) -> None:
    """Move to one second into a minute, so that requests made within the next minute share
    one fixed window (a slow machine could otherwise cross into the next one)."""
    now = clock.now()
    travel(timedelta(seconds=61 - now.second, microseconds=-now.microsecond))


@pytest.mark.usefixtures("window_start")
async def test_the_limit_is_shared_by_every_replica(settings: Settings, sender: Sender) -> None:
    limited = settings.model_copy(update={"rate_limit": "4/1m"})
    async with (
        ApiServer.running(limited) as first,
        ApiServer.running(limited) as second,
        httpx.AsyncClient() as http,
    ):
        answers = []
        for server in (first, second, first, second, first):
            response = await http.get(f"{server.url}/v3/mail/batch/x", headers=sender.headers)
            answers.append(response)
    assert [r.status_code for r in answers] == [404, 404, 404, 404, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["3", "2", "1", "0", "0"]
    assert answers[-1].json() == {
        "errors": [{"message": "too many requests", "field": None, "help": None}]
    }
    assert int(answers[-1].headers["Retry-After"]) >= 1


@pytest.mark.usefixtures("window_start")
async def test_limits_are_per_key(settings: Settings, sender: Sender) -> None:
    limited = settings.model_copy(update={"rate_limit": "1/1m"})
    async with ApiServer.running(limited) as server, httpx.AsyncClient() as http:
        mine = await http.get(f"{server.url}/v1/batches/x", headers=sender.headers)
        again = await http.get(f"{server.url}/v1/batches/x", headers=sender.headers)
        guessed = await http.get(
            f"{server.url}/v1/batches/x", headers={"Authorization": "Bearer SG.a.b"}
        )
    assert (mine.status_code, again.status_code, guessed.status_code) == (404, 429, 401)


async def test_rate_limiting_can_be_turned_off(settings: Settings, sender: Sender) -> None:
    unlimited = settings.model_copy(update={"rate_limit": "off"})
    async with ApiServer.running(unlimited) as server, httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/v1/batches/x", headers=sender.headers)
    assert response.status_code == 404
    assert "X-RateLimit-Limit" not in response.headers
