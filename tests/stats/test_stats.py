"""Stats: counters kept with the events, SendGrid's metric names, ETag, /v3 shapes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from app.core import clock
from app.core.db import Database
from app.events import service as events
from app.events.models import Event, EventType
from app.stats.models import SENDGRID_METRICS
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_key
from tests.test_end_to_end import Deliver, send


async def stats(client: httpx.AsyncClient, sender: Sender, **params: Any) -> dict[str, Any]:
    """GET /v1/stats."""
    response = await client.get("/v1/stats", params=params, headers=sender.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def today() -> str:
    """Today's date (UTC) as YYYY-MM-DD."""
    return clock.now().date().isoformat()


async def test_totals_equal_the_events_of_a_mixed_run(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    async with db.session() as session:
        for email, kind in (
            ("gone@example.test", SuppressionType.BOUNCE),
            ("spam@example.test", SuppressionType.COMPLAINT),
            ("left@example.test", SuppressionType.UNSUBSCRIBE),
        ):
            await suppressions.suppress(
                session, account_id=sender.account_id, email=email, type=kind, reason="test"
            )
        await session.commit()
    mx.reply_at("RCPT", 550, "5.1.1 no such user", to="nobody@example.test")
    mx.reply_at(
        "RCPT", 554, "5.7.1 rejected by policy: listed on a blocklist", to="blocked@example.test"
    )
    mx.reply_at("RCPT", 450, "4.2.1 busy", to="busy@example.test", times=1)
    await send(
        client,
        sender,
        to=["ok@example.test", "nobody@example.test", "blocked@example.test", "busy@example.test"],
        categories=["receipt"],
    )
    await send(
        client,
        sender,
        to=["gone@example.test", "spam@example.test", "left@example.test", "two@example.test"],
    )
    await deliver()
    travel(timedelta(minutes=6))
    await deliver()

    async with db.session() as session:
        rows = (await session.execute(select(Event.type, Event.data))).all()
    counts = Counter(row.type for row in rows)
    totals = (await stats(client, sender, start=today()))["totals"]
    assert counts["processed"] == totals["processed"] == 5
    assert counts["dropped"] == totals["drops"] == 3
    assert totals["requests"] == 8
    assert counts["delivered"] == totals["delivered"] == 3
    assert counts["deferred"] == totals["deferred"] == 1
    assert counts["bounced"] == totals["bounces"] + totals["blocks"] == 2
    assert totals["blocks"] == 1  # the 5.7.1 policy rejection
    assert (totals["bounce_drops"], totals["spam_report_drops"], totals["unsubscribe_drops"]) == (
        1,
        1,
        1,
    )

    receipt = (await stats(client, sender, start=today(), category="receipt"))["totals"]
    assert receipt["processed"] == 4
    assert receipt["delivered"] == 2
    assert receipt["drops"] == 0


async def test_hourly_buckets_are_filled_and_rolled_up(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    base = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)  # a Monday
    when = [base, base + timedelta(minutes=20), base + timedelta(hours=2), base + timedelta(days=8)]
    async with db.session() as session:
        await events.record(
            session,
            [
                events.NewEvent(
                    account_id=sender.account_id, type=EventType.DELIVERED, created_at=at
                )
                for at in when
            ],
        )
        await session.commit()
    hourly = await stats(
        client, sender, start="2026-03-02T10:00:00Z", end="2026-03-02T14:00:00Z", granularity="hour"
    )
    assert [s["metrics"]["delivered"] for s in hourly["stats"]] == [2, 0, 1, 0]
    assert next(s["start"] for s in hourly["stats"]) == "2026-03-02T10:00:00Z"
    daily = await stats(client, sender, start="2026-03-01", end="2026-03-11")
    assert len(daily["stats"]) == 11
    assert daily["stats"][1]["metrics"]["delivered"] == 3
    assert daily["stats"][9]["metrics"]["delivered"] == 1
    weekly = await stats(client, sender, start="2026-03-02", end="2026-03-15", granularity="week")
    assert [s["metrics"]["delivered"] for s in weekly["stats"]] == [3, 1]
    monthly = await stats(client, sender, start="2026-01-01", end="2026-04-30", granularity="month")
    assert [s["start"][:10] for s in monthly["stats"]] == [
        "2026-01-01",
        "2026-02-01",
        "2026-03-01",
        "2026-04-01",
    ]
    assert monthly["totals"]["delivered"] == 4


async def test_unchanged_stats_answer_304(client: httpx.AsyncClient, sender: Sender) -> None:
    first = await client.get("/v1/stats", params={"start": today()}, headers=sender.headers)
    etag = first.headers["etag"]
    again = await client.get(
        "/v1/stats", params={"start": today()}, headers={**sender.headers, "If-None-Match": etag}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    await send(client, sender, to=["a@example.test"])
    changed = await client.get(
        "/v1/stats", params={"start": today()}, headers={**sender.headers, "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    v3 = await client.get("/v3/stats", params={"start_date": today()}, headers=sender.headers)
    cached = await client.get(
        "/v3/stats",
        params={"start_date": today()},
        headers={**sender.headers, "If-None-Match": v3.headers["etag"]},
    )
    assert cached.status_code == 304


async def test_sendgrid_v3_shapes(client: httpx.AsyncClient, sender: Sender) -> None:
    await send(client, sender, to=["a@example.test"], categories=["docs", "news"])
    start = (clock.now() - timedelta(days=1)).date().isoformat()
    response = await client.get("/v3/stats", params={"start_date": start}, headers=sender.headers)
    days = response.json()
    assert [d["date"] for d in days] == [start, today()]
    assert list(days[1]["stats"][0]) == ["metrics"]
    assert sorted(days[1]["stats"][0]["metrics"]) == sorted(SENDGRID_METRICS)
    assert days[1]["stats"][0]["metrics"]["processed"] == 1
    response = await client.get(
        "/v3/categories/stats",
        params={"start_date": today(), "categories": ["docs", "news"], "aggregated_by": "month"},
        headers=sender.headers,
    )
    [month] = response.json()
    assert month["date"] == today()[:8] + "01"
    assert [(s["type"], s["name"], s["metrics"]["requests"]) for s in month["stats"]] == [
        ("category", "docs", 1),
        ("category", "news", 1),
    ]


async def test_bad_stats_requests_get_sendgrid_errors(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    for path, params, field in (
        ("/v3/stats", {}, "start_date"),
        ("/v3/stats", {"start_date": "2026/01/01"}, "start_date"),
        ("/v3/stats", {"start_date": "2026-02-01", "end_date": "2026-01-01"}, "end_date"),
        ("/v3/stats", {"start_date": "2026-01-01", "aggregated_by": "year"}, "aggregated_by"),
        ("/v3/categories/stats", {"start_date": "2026-01-01"}, "categories"),
        (
            "/v3/categories/stats",
            {"start_date": "2026-01-01", "categories": [str(i) for i in range(11)]},
            "categories",
        ),
        ("/v1/stats", {"start": "yesterday"}, "start"),
        ("/v1/stats", {"start": "2020-01-01", "granularity": "hour"}, "end"),
    ):
        response = await client.get(path, params=params, headers=sender.headers)
        assert response.status_code == 400, (path, params, response.text)
        assert response.json()["errors"][0]["field"] == field, (path, params, response.text)
    key = await make_key(db, account="acme", scopes=["mail.send"])
    forbidden = await client.get(
        "/v1/stats", params={"start": today()}, headers={"Authorization": f"Bearer {key}"}
    )
    assert forbidden.status_code == 403
