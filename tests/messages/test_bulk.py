"""POST /v1/send with `recipients`: one copy each, rendered at delivery with that recipient's
data, their metadata in their events, their own send time; a template failing for one
recipient drops only that recipient."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import httpx

from app.core import clock
from app.core.db import Database
from app.messages import dispatch
from app.messages.compose import Composer, Copy
from tests.fakes.mx import ScriptedMX
from tests.support import Sender
from tests.test_end_to_end import Deliver, message_view, send


def parse(data: bytes) -> EmailMessage:
    """A received message, parsed."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def by_recipient(mx: ScriptedMX) -> dict[str, EmailMessage]:
    """Each delivered copy by recipient."""
    return {rcpt: parse(m.data) for m in mx.messages for rcpt in m.rcpt_tos}


def html_of(message: EmailMessage) -> str:
    """The html body."""
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


async def test_each_recipient_gets_their_own_rendered_copy(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
) -> None:
    accepted = await send(
        client,
        sender,
        subject="Hello {{ name }}",
        text="Hi {{ name }}, your code is {{ code }}.",
        html="<p>Hi {{ name }}</p>{% for item in items %}<i>{{ item }}</i>{% endfor %}",
        template_engine="jinja",
        template_data={"code": "DEFAULT"},
        recipients=[
            {
                "to": {"email": "alice@example.test", "name": "Alice"},
                "template_data": {"name": "Alice <3", "code": "A1", "items": [1, 2]},
                "metadata": {"customer": "c-1"},
            },
            {
                "to": "bob@example.test",
                "template_data": {"name": "Bob", "items": []},
                "metadata": {"customer": "c-2"},
                "headers": {"X-Campaign": "spring"},
            },
        ],
    )
    await deliver()
    await mx.wait_for(2)
    copies = by_recipient(mx)
    alice, bob = copies["alice@example.test"], copies["bob@example.test"]
    assert alice["To"] == "Alice <alice@example.test>"
    assert bob["To"] == "bob@example.test"
    assert alice["Subject"] == "Hello Alice <3"
    assert "<p>Hi Alice &lt;3</p><i>1</i><i>2</i>" in html_of(alice)  # html autoescaped
    text = bob.get_body(("plain",))
    assert text is not None
    assert "your code is DEFAULT." in text.get_content()
    assert bob["X-Campaign"] == "spring"
    assert alice["X-Campaign"] is None
    assert alice["Message-ID"] != bob["Message-ID"]
    view = await message_view(client, sender, accepted["id"])
    metadata = {r["email"]: r["events"][0]["data"]["custom_args"] for r in view["recipients"]}
    assert metadata == {
        "alice@example.test": {"customer": "c-1"},
        "bob@example.test": {"customer": "c-2"},
    }


async def test_each_recipient_is_sent_at_their_own_time(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    travel: Callable[[timedelta], None],
) -> None:
    later = (clock.now() + timedelta(hours=3)).isoformat()
    accepted = await send(
        client,
        sender,
        recipients=[
            {"to": "now@example.test"},
            {"to": "later@example.test", "send_at": later},
        ],
    )
    assert [r["status"] for r in accepted["recipients"]] == ["queued", "scheduled"]
    await deliver()
    await mx.wait_for(1)
    assert [m.rcpt_tos for m in mx.messages] == [["now@example.test"]]
    travel(timedelta(hours=3, seconds=5))
    await deliver()
    await mx.wait_for(2)
    assert mx.messages[1].rcpt_tos == ["later@example.test"]


async def test_a_failing_render_drops_only_that_recipient_with_the_error(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    accepted = await send(
        client,
        sender,
        subject="Total",
        text="Each: {{ total / count }}",
        template_engine="jinja",
        recipients=[
            {"to": "fine@example.test", "template_data": {"total": 10, "count": 2}},
            {"to": "broken@example.test", "template_data": {"total": 10, "count": 0}},
        ],
    )
    await deliver()
    await mx.wait_for(1)
    view = await message_view(client, sender, accepted["id"])
    statuses = {r["email"]: r["status"] for r in view["recipients"]}
    assert statuses == {"fine@example.test": "delivered", "broken@example.test": "dropped"}
    broken = next(r for r in view["recipients"] if r["email"] == "broken@example.test")
    assert [e["type"] for e in broken["events"]] == ["processed", "dropped"]
    assert "ZeroDivisionError" in broken["events"][1]["data"]["response"]


async def test_a_sandbox_escape_in_a_template_drops_the_recipient(
    client: httpx.AsyncClient, sender: Sender, deliver: Deliver
) -> None:
    accepted = await send(
        client,
        sender,
        subject="x",
        text="{{ name.__class__.__mro__ }}",
        template_engine="jinja",
        recipients=[{"to": "victim@example.test", "template_data": {"name": "x"}}],
    )
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    [recipient] = view["recipients"]
    assert recipient["status"] == "dropped"
    assert "SecurityError" in recipient["events"][-1]["data"]["response"]


async def test_a_thousand_personalised_recipients_in_one_request(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    recipients: list[dict[str, Any]] = [
        {"to": f"user{i}@example.test", "template_data": {"n": i}, "metadata": {"i": i}}
        for i in range(1000)
    ]
    response = await client.post(
        "/v1/send",
        headers=sender.headers,
        json={
            "from": sender.address(),
            "subject": "No. {{ n }}",
            "text": "You are number {{ n }}.",
            "template_engine": "jinja",
            "recipients": recipients,
        },
    )
    assert response.status_code == 202, response.text
    assert len(response.json()["recipients"]) == 1000
    # Each copy renders to bytes of its own, deterministically (a retry sends the same bytes).
    async with db.session() as session:
        loaded = await dispatch.load_message(session, message_id=response.json()["id"])
        claim = await dispatch.claim(
            session, message_id=loaded.message.id, lease=timedelta(minutes=1), limit=3
        )
        await session.commit()
    composer = Composer(lambda _loaded: _NoSigner())
    first = composer.copies(loaded, claim.recipients)
    again = Composer(lambda _loaded: _NoSigner()).copies(loaded, claim.recipients)
    assert all(isinstance(c, Copy) for c in first)
    assert [c.data for c in first if isinstance(c, Copy)] == [
        c.data for c in again if isinstance(c, Copy)
    ]
    assert len({c.digest for c in first if isinstance(c, Copy)}) == 3


class _NoSigner:
    """Signing is not what this test is about."""

    def sign(self, data: bytes, *, timestamp: int) -> bytes:
        """No signature header."""
        return b""


async def test_bulk_rules_are_enforced(client: httpx.AsyncClient, sender: Sender) -> None:
    base = {"from": sender.address(), "subject": "x", "text": "x"}
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"to": ["a@example.test"], "recipients": [{"to": "b@example.test"}]}, "to"),
        ({}, "to"),
        ({"recipients": [{"to": "a@example.test"}, {"to": "A@example.test"}]}, None),
        ({"recipients": [{"to": f"u{i}@example.test"} for i in range(1001)]}, "recipients"),
        ({"recipients": [{"to": "a@example.test", "headers": {"From": "x"}}]}, None),
        ({"recipients": [{"to": "a@example.test"}], "cc": ["c@example.test"]}, None),
        ({"to": ["a@example.test"], "text": "{% if %}", "template_engine": "jinja"}, "text"),
        ({"to": ["a@example.test"], "send_at": "2026-01-01T00:00:00"}, "send_at"),
        ({"to": ["a@example.test"], "text": "nul\u0000"}, "text"),
        (
            {"recipients": [{"to": "a@example.test", "metadata": {"k": "\u0000"}}]},
            "recipients.0.metadata.k",
        ),
    ]
    for extra, field in cases:
        response = await client.post("/v1/send", headers=sender.headers, json={**base, **extra})
        assert response.status_code == 400, (extra, response.text)
        if field is not None:
            assert field in {e["field"] for e in response.json()["errors"]}, response.json()
