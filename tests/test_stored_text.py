"""Rows stored before the edge refused lone surrogates never turn a page into a 500."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import update

from app.core.db import Database
from app.events.models import Event
from app.messages.models import Message
from app.webhooks.payloads import EventContext, sendgrid_body, standard_body
from tests.support import Sender

BAD = "x\ud800y"
SHOWN = "x\ufffdy"


@pytest.fixture
def sqlite_only(db: Database) -> None:
    """Only SQLite can hold such a row: PostgreSQL's jsonb refuses lone surrogates."""
    if not db.settings.is_sqlite:
        pytest.skip("jsonb refuses lone surrogates, so no such row can exist on PostgreSQL")


@pytest.mark.usefixtures("sqlite_only")
async def test_feed_and_message_view_show_a_stored_surrogate_as_replacement(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    body = {"from": sender.address(), "to": ["a@example.test"], "subject": "Hi", "text": "x"}
    accepted = (await client.post("/v1/send", json=body, headers=sender.headers)).json()
    async with db.session() as session:
        await session.execute(
            update(Event).values(data={"email": "a@example.test", "note": BAD, BAD: [BAD]})
        )
        await session.execute(update(Message).values(custom_args={"k": BAD}, categories=[BAD]))
        await session.commit()

    feed = await client.get("/v1/events", headers=sender.headers)
    assert feed.status_code == 200, feed.text
    assert feed.json()["events"][0]["data"] == {
        "email": "a@example.test",
        "note": SHOWN,
        SHOWN: [SHOWN],
    }
    view = await client.get(f"/v1/messages/{accepted['id']}", headers=sender.headers)
    assert view.status_code == 200, view.text
    assert view.json()["metadata"] == {"k": SHOWN}
    assert view.json()["categories"] == [SHOWN]
    assert view.json()["recipients"][0]["events"][0]["data"]["note"] == SHOWN


def test_webhook_bodies_carry_no_lone_surrogate() -> None:
    event = EventContext(
        id=1,
        type="delivered",
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
        data={"response": BAD},
        message_id="m",
        recipient_id="r",
        categories=(BAD,),
        custom_args={"k": BAD},
        email="a@example.test",
    )
    for body in (standard_body([event], timestamp=event.created_at), sendgrid_body([event])):
        assert body is not None
        assert "\\ud800" not in body
        assert "\\ufffd" in body
