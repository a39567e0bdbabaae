"""SendGrid's Email Activity API (`GET /v3/messages`, `GET /v3/messages/{msg_id}`) over sends
accepted and delivered through the API."""

from __future__ import annotations

from typing import Any

import httpx

from app.core.config import Settings
from app.core.db import Database
from app.events import service as events
from app.events.models import EventType
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_key, make_sender
from tests.test_end_to_end import Deliver, send

ROW_FIELDS = {
    "from_email",
    "msg_id",
    "subject",
    "to_email",
    "status",
    "opens_count",
    "clicks_count",
    "last_event_time",
}


async def activity(
    client: httpx.AsyncClient, sender: Sender, query: str | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """GET /v3/messages; returns its rows."""
    params: dict[str, Any] = {"limit": limit, **({"query": query} if query else {})}
    response = await client.get("/v3/messages", params=params, headers=sender.headers)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["messages"]
    assert all(set(row) == ROW_FIELDS for row in rows)
    return rows


async def test_rows_are_recipients_newest_first_in_sendgrids_shape(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    first = await send(client, sender, subject="First", to=["a@x.test", "b@x.test"])
    second = await send(client, sender, subject="Second", to=["c@x.test"])
    rows = await activity(client, sender)
    assert [(r["to_email"], r["subject"]) for r in rows[:1]] == [("c@x.test", "Second")]
    assert sorted((r["to_email"], r["subject"]) for r in rows[1:]) == [
        ("a@x.test", "First"),
        ("b@x.test", "First"),
    ]
    [c_row] = [r for r in rows if r["to_email"] == "c@x.test"]
    [c_recipient] = second["recipients"]
    assert c_row["msg_id"] == f"{second['id']}.{c_recipient['id']}"
    assert c_row["from_email"] == sender.address()
    assert (c_row["status"], c_row["opens_count"], c_row["clicks_count"]) == ("processed", 0, 0)
    assert len(await activity(client, sender, limit=2)) == 2
    assert first["id"] in rows[2]["msg_id"]


async def test_queries_filter_as_sendgrid_documents(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mx.reply_at("RCPT", 550, "no such user", to="gone@example.test")
    await send(client, sender, subject="Receipt 1", to=["ok@example.test"], categories=["receipt"])
    await send(
        client,
        sender,
        subject="Welcome aboard",
        to=["gone@example.test", "ok@example.test"],
        metadata={"plan": "pro"},
    )
    await deliver()

    async def to_emails(query: str) -> list[str]:
        return sorted(row["to_email"] for row in await activity(client, sender, query))

    assert await to_emails('to_email="OK@example.test"') == ["ok@example.test"] * 2
    assert await to_emails('status="not_delivered"') == ["gone@example.test"]
    assert await to_emails('status="delivered" AND subject LIKE "welcome%"') == ["ok@example.test"]
    assert await to_emails('subject="Receipt 1"') == ["ok@example.test"]
    assert await to_emails('subject="receipt 1"') == []  # = is exact
    assert await to_emails('(Contains(categories,"receipt"))') == ["ok@example.test"]
    assert await to_emails("unique_args['plan']=\"pro\"") == [
        "gone@example.test",
        "ok@example.test",
    ]
    either = 'to_email="gone@example.test" OR Contains(categories,"receipt")'
    assert await to_emails(either) == ["gone@example.test", "ok@example.test"]
    assert await to_emails('to_email LIKE "%@example.test" AND status IN ("bounced")') == [
        "gone@example.test"
    ]
    assert await to_emails(f'from_email="{sender.address()}"') == [
        "gone@example.test",
        "ok@example.test",
        "ok@example.test",
    ]


async def test_time_range_and_msg_id(client: httpx.AsyncClient, sender: Sender) -> None:
    accepted = await send(client, sender, to=["a@x.test", "b@x.test"])
    [row_a, _] = await activity(client, sender)
    moment = row_a["last_event_time"]
    inside = f'last_event_time BETWEEN TIMESTAMP "2000-01-01T00:00:00Z" AND TIMESTAMP "{moment}"'
    assert len(await activity(client, sender, inside)) == 2
    after = f'last_event_time > TIMESTAMP "{moment}"'
    assert await activity(client, sender, after) == []
    [only] = await activity(client, sender, f'msg_id="{row_a["msg_id"]}"')
    assert only == row_a
    assert len(await activity(client, sender, f'msg_id="{accepted["id"]}"')) == 2


async def test_opens_clicks_and_last_event_time_come_from_events(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    accepted = await send(client, sender, to=["a@x.test"])
    [recipient] = accepted["recipients"]
    async with db.session() as session:
        await events.record(
            session,
            [
                events.NewEvent(sender.account_id, kind, accepted["id"], recipient["id"])
                for kind in (EventType.OPENED, EventType.OPENED, EventType.CLICKED)
            ],
        )
        await session.commit()
    [row] = await activity(client, sender)
    assert (row["opens_count"], row["clicks_count"]) == (2, 1)


async def test_message_detail_lists_events_by_sendgrids_names(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mx.reply_at("RCPT", 550, "5.1.1 no such user", to="gone@example.test")
    accepted = await send(
        client,
        sender,
        to=["gone@example.test"],
        categories=["welcome"],
        metadata={"plan": "pro"},
    )
    await deliver()
    [row] = await activity(client, sender)
    response = await client.get(f"/v3/messages/{row['msg_id']}", headers=sender.headers)
    assert response.status_code == 200, response.text
    detail = response.json()
    assert (detail["msg_id"], detail["to_email"], detail["status"]) == (
        row["msg_id"],
        "gone@example.test",
        "not_delivered",
    )
    assert (detail["categories"], detail["unique_args"]) == (["welcome"], {"plan": "pro"})
    names = [event["event_name"] for event in detail["events"]]
    assert names == ["processed", "bounced"]
    bounce = detail["events"][1]
    assert "no such user" in bounce["reason"]
    assert bounce["attempt_num"] == 1
    assert bounce["mx_server"]
    assert accepted["id"] in detail["msg_id"]


async def test_detail_of_another_account_or_a_bad_id_is_404(
    client: httpx.AsyncClient, sender: Sender, db: Database, dns_server: FakeDNS, settings: Settings
) -> None:
    other = await make_sender(db, dns_server, settings, account="globex", domain="globex.test")
    await send(client, sender, to=["a@x.test"])
    [row] = await activity(client, sender)
    message_id, recipient_id = row["msg_id"].split(".")
    for msg_id, who in [
        (row["msg_id"], other),
        (f"{message_id}.01ARZ3NDEKTSV4RRFFQ69G5FAV", sender),
        (f"01ARZ3NDEKTSV4RRFFQ69G5FAV.{recipient_id}", sender),
        (message_id, sender),
    ]:
        response = await client.get(f"/v3/messages/{msg_id}", headers=who.headers)
        assert response.status_code == 404, msg_id
        assert response.json()["errors"][0]["field"] == "msg_id"
    assert await activity(client, other) == []
    assert await activity(client, other, 'to_email="a@x.test"') == []


async def test_bad_queries_are_400_with_the_position(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    for query, position in [('to_email="a@x.test" AND', 23), ('subject LIKE "%x%"', 0)]:
        response = await client.get("/v3/messages", params={"query": query}, headers=sender.headers)
        assert response.status_code == 400
        [error] = response.json()["errors"]
        assert error["field"] == "query"
        assert f"at position {position}" in error["message"]
    for limit in ("0", "1001"):
        response = await client.get("/v3/messages", params={"limit": limit}, headers=sender.headers)
        assert response.status_code == 400
        assert response.json()["errors"][0]["field"] == "limit"


async def test_the_messages_read_scope_is_required(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    await send(client, sender, to=["a@x.test"])
    sender_only = await make_key(db, account="acme", scopes=["mail.send"])
    headers = {"Authorization": f"Bearer {sender_only}"}
    assert (await client.get("/v3/messages", headers=headers)).status_code == 403
    assert (await client.get("/v3/messages/x.y", headers=headers)).status_code == 403
