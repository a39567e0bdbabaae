"""SendGrid's /v3/categories, category sums, mailbox provider stats and bounce classification
totals, counted from real sends and deliveries."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sendgrid import SendGridAPIClient

from app.core import clock
from tests.fakes.mx import ScriptedMX
from tests.support import ApiServer, Sender
from tests.test_end_to_end import Deliver, send


def today() -> str:
    """Today's date (UTC) as YYYY-MM-DD."""
    return clock.now().date().isoformat()


async def get(client: httpx.AsyncClient, sender: Sender, path: str, **params: Any) -> Any:
    """GET a /v3 path; the JSON body of its 200."""
    response = await client.get(path, params=params, headers=sender.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def bounce_some(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    """Two unknown users and a blocklisted one at example.test, one at other.test."""
    for address in ("nobody@example.test", "gone@example.test", "nobody@other.test"):
        mx.reply_at("RCPT", 550, "5.1.1 no such user", to=address)
    mx.reply_at("RCPT", 554, "5.7.1 listed on a blocklist", to="blocked@example.test")
    await send(
        client,
        sender,
        to=[
            "nobody@example.test",
            "gone@example.test",
            "nobody@other.test",
            "blocked@example.test",
            "ok@example.test",
        ],
        categories=["alerts"],
    )
    await deliver()


async def test_categories_are_listed_by_name_with_prefix_search_and_paging(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    await send(client, sender, to=["a@gmail.com"], categories=["receipt", "reminder"])
    await send(client, sender, to=["b@yahoo.com"], categories=["promo"])
    await bounce_some(client, sender, mx, deliver)  # bounce classifications counted too

    listed = await get(client, sender, "/v3/categories")
    assert listed == [{"category": c} for c in ("alerts", "promo", "receipt", "reminder")]
    assert await get(client, sender, "/v3/categories", category="re") == [
        {"category": "receipt"},
        {"category": "reminder"},
    ]
    page = await get(client, sender, "/v3/categories", limit=2, offset=1)
    assert page == [{"category": "promo"}, {"category": "receipt"}]


async def test_category_sums_sort_by_a_metric_and_page(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    await send(client, sender, to=["x@example.test", "y@example.test"], categories=["big"])
    await send(client, sender, to=["z@example.test"], categories=["small"])
    await deliver()
    await send(client, sender, to=["queued@example.test"], categories=["none-yet"])

    body = await get(client, sender, "/v3/categories/stats/sums", start_date=today())
    assert body["date"] == today()
    assert [(s["name"], s["metrics"]["delivered"]) for s in body["stats"]] == [
        ("big", 2),
        ("small", 1),
        ("none-yet", 0),
    ]
    assert all(s["type"] == "category" for s in body["stats"])
    assert body["stats"][2]["metrics"]["requests"] == 1

    ascending = await get(
        client,
        sender,
        "/v3/categories/stats/sums",
        start_date=today(),
        sort_by_metric="delivered",
        sort_by_direction="asc",
        limit=2,
    )
    assert [s["name"] for s in ascending["stats"]] == ["none-yet", "small"]


async def test_category_sums_refuse_an_unknown_metric(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    response = await client.get(
        "/v3/categories/stats/sums",
        params={"start_date": today(), "sort_by_metric": "smiles"},
        headers=sender.headers,
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "sort_by_metric"


async def test_mailbox_provider_stats_group_recipients_by_provider(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    await send(client, sender, to=["ok@example.test", "two@example.test"])
    await deliver()
    await send(
        client,
        sender,
        to=["a@gmail.com", "b@GoogleMail.com", "c@yahoo.com", "d@hotmail.com", "e@icloud.com"],
    )

    [day] = await get(client, sender, "/v3/mailbox_providers/stats", start_date=today())
    assert day["date"] == today()
    by_name = {s["name"]: s["metrics"] for s in day["stats"]}
    assert {s["type"] for s in day["stats"]} == {"mailbox_provider"}
    assert {name: m["processed"] for name, m in by_name.items()} == {
        "Gmail": 2,
        "Yahoo": 1,
        "Outlook.com": 1,
        "iCloud": 1,
        "Other": 2,
    }
    assert by_name["Other"]["delivered"] == 2
    assert by_name["Gmail"]["delivered"] == 0
    assert set(by_name["Gmail"]) == {
        "blocks",
        "bounces",
        "clicks",
        "deferred",
        "delivered",
        "drops",
        "opens",
        "processed",
        "requests",
        "spam_reports",
        "unique_clicks",
        "unique_opens",
    }

    [asked] = await get(
        client,
        sender,
        "/v3/mailbox_providers/stats",
        start_date=today(),
        mailbox_providers=["Yahoo", "AOL"],
    )
    assert [(s["name"], s["metrics"]["processed"]) for s in asked["stats"]] == [
        ("Yahoo", 1),
        ("AOL", 0),
    ]


async def test_bounce_classifications_per_day_most_first(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    await bounce_some(client, sender, mx, deliver)

    body = await get(client, sender, "/v3/suppression/bounces/classifications")
    assert body == {
        "result": [
            {
                "date": today(),
                "stats": [
                    {"classification": "Invalid Address", "count": 3},
                    {"classification": "Reputation", "count": 1},
                ],
            }
        ]
    }
    by_domain = await get(
        client,
        sender,
        "/v3/suppression/bounces/classifications/Invalid Address",
        start_date=today(),
        end_date=today(),
    )
    assert by_domain == {
        "result": [
            {
                "date": today(),
                "stats": [
                    {"domain": "example.test", "count": 2},
                    {"domain": "other.test", "count": 1},
                ],
            }
        ]
    }
    # The bounces list itself still answers for an address.
    [entry] = await get(client, sender, "/v3/suppression/bounces/nobody@example.test")
    assert entry["email"] == "nobody@example.test"


async def test_bounce_classifications_as_csv(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    await bounce_some(client, sender, mx, deliver)

    response = await client.get(
        "/v3/suppression/bounces/classifications",
        headers={**sender.headers, "Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows == [
        ["date", "classification", "count"],
        [today(), "Invalid Address", "3"],
        [today(), "Reputation", "1"],
    ]


async def test_unknown_classification_is_refused(client: httpx.AsyncClient, sender: Sender) -> None:
    response = await client.get(
        "/v3/suppression/bounces/classifications/Grumpy", headers=sender.headers
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "classification"


async def test_the_official_client_reads_them(
    api: ApiServer, sender: Sender, client: httpx.AsyncClient, mx: ScriptedMX, deliver: Deliver
) -> None:
    await bounce_some(client, sender, mx, deliver)
    sg = SendGridAPIClient(sender.key, host=api.url)

    categories = await asyncio.to_thread(sg.client.categories.get, query_params={"limit": 10})
    assert categories.status_code == 200
    assert categories.to_dict == [{"category": "alerts"}]
    totals = await asyncio.to_thread(sg.client.suppression.bounces.classifications.get)
    assert totals.to_dict["result"][0]["stats"][0] == {
        "classification": "Invalid Address",
        "count": 3,
    }
    providers = await asyncio.to_thread(
        sg.client.mailbox_providers.stats.get, query_params={"start_date": today()}
    )
    assert providers.to_dict[0]["stats"][0]["name"] == "Other"


async def test_bounce_classifications_default_to_the_last_30_days(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    travel: Callable[[timedelta], None],
) -> None:
    await bounce_some(client, sender, mx, deliver)
    bounced_on = today()
    travel(timedelta(days=29))
    recent = await get(client, sender, "/v3/suppression/bounces/classifications")
    assert [day["date"] for day in recent["result"]] == [bounced_on]
    travel(timedelta(days=1))
    assert await get(client, sender, "/v3/suppression/bounces/classifications") == {"result": []}
    asked = await get(
        client, sender, "/v3/suppression/bounces/classifications", start_date=bounced_on
    )
    assert [day["date"] for day in asked["result"]] == [bounced_on]


async def test_bounce_classifications_refuse_a_bad_date(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    response = await client.get(
        "/v3/suppression/bounces/classifications",
        params={"end_date": "2026-13-45"},
        headers=sender.headers,
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "end_date"
