"""COLUMBA_CONTENT_RETENTION: a finished message loses its content before its history."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import Database
from app.messages.models import Message, MessageAttachment, Recipient
from tests.dashboard.support import dashboard
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, run_job
from tests.test_end_to_end import Deliver, message_view, send, status_of
from worker import jobs

WEEK = timedelta(days=7)


async def test_content_goes_after_content_retention_and_history_stays(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    db: Database,
    settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:
    attachment = {"filename": "a.txt", "content": base64.b64encode(b"secret").decode()}
    done = await send(
        client,
        sender,
        to=["alice@example.test"],
        html="<p>Private</p>",
        attachments=[attachment],
    )
    await deliver()
    mx.reply_at("RCPT", 450, "4.2.1 busy")
    waiting = await send(client, sender, to=["bob@example.test"], html="<p>Later</p>")
    await deliver()
    short = settings.model_copy(update={"content_retention": WEEK})
    before = await message_view(client, sender, done["id"])

    assert await run_job(short, jobs.purge_expired_data) == 0  # nothing is a week old yet
    travel(WEEK + timedelta(hours=1))
    assert await run_job(short, jobs.purge_expired_data) >= 2  # attachment, message

    view = await message_view(client, sender, done["id"])
    assert view["content_purged"] is True
    assert view["recipients"] == before["recipients"]  # statuses, attempts, events
    assert view["subject"] == before["subject"]
    async with db.session() as session:
        message = await session.get(Message, done["id"])
        assert message is not None
        assert (message.text, message.html) == (None, None)
        files = select(func.count()).select_from(MessageAttachment)
        assert await session.scalar(files) == 0
        kept = await session.get(Message, waiting["id"])
        assert kept is not None
        assert kept.html == "<p>Later</p>"  # deferred: not finished
    later = await message_view(client, sender, waiting["id"])
    assert later["content_purged"] is False
    assert status_of(later, "bob@example.test") == "deferred"

    pages = await dashboard(client, sender.key)
    page = await pages.get(f"/dashboard/messages/{done['id']}/source")
    assert page.status_code == 410
    assert "COLUMBA_CONTENT_RETENTION" in page.text


async def test_personalizations_go_with_the_content(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    db: Database,
    settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:
    mail = {
        "personalizations": [
            {"to": [{"email": "alice@example.test"}], "substitutions": {"-n-": "Alice"}}
        ],
        "from": {"email": sender.address()},
        "subject": "Hi -n-",
        "content": [{"type": "text/plain", "value": "Dear -n-"}],
    }
    response = await client.post("/v3/mail/send", json=mail, headers=sender.headers)
    assert response.status_code == 202, response.text
    await deliver()
    travel(WEEK + timedelta(hours=1))
    await run_job(settings.model_copy(update={"content_retention": WEEK}), jobs.purge_expired_data)
    async with db.session() as session:
        personal = select(Recipient.personalization).where(Recipient.personalization.is_not(None))
        assert (await session.execute(personal)).first() is None
        assert await session.scalar(select(func.count()).select_from(Recipient)) == 1


def test_content_retention_is_validated() -> None:
    with pytest.raises(ValidationError, match="COLUMBA_CONTENT_RETENTION"):
        Settings(retention=timedelta(days=30), content_retention=timedelta(days=31))
    assert Settings(content_retention="7d").content_retention_period == WEEK
    assert Settings(retention="30d").content_retention_period == timedelta(days=30)
    assert Settings(content_retention="0").content_retention_period == timedelta(0)
    # Keeping messages forever and their content a week is allowed.
    assert Settings(retention="0", content_retention="7d").content_retention == WEEK
