"""Content types beside text/plain and text/html: a meeting invitation's text/calendar is sent
as SendGrid sends it, a further alternative after text and html, its method kept."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import httpx
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Content, Mail

from app.core.config import Settings
from app.core.db import Database
from tests.fakes.mx import ScriptedMX
from tests.messages.test_send_validation import count_rows
from tests.support import ApiServer, Sender
from tests.test_end_to_end import Deliver

INVITATION = "\r\n".join(
    [
        "BEGIN:VCALENDAR",
        "PRODID:-//Columba//Tests//EN",
        "VERSION:2.0",
        "METHOD:REQUEST",
        "BEGIN:VEVENT",
        "UID:review-42@sender.test",
        "DTSTAMP:20261201T090000Z",
        "DTSTART:20261210T140000Z",
        "DTEND:20261210T150000Z",
        "SUMMARY:Quarterly review",
        "ORGANIZER;CN=Planner:mailto:planner@sender.test",
        "ATTENDEE;RSVP=TRUE;PARTSTAT=NEEDS-ACTION:mailto:alice@example.test",
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
)


def parse(data: bytes) -> EmailMessage:
    """A received message, parsed."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def post(client: httpx.AsyncClient, sender: Sender, content: list[Any]) -> httpx.Response:
    """POST /v3/mail/send with these content entries."""
    return await client.post(
        "/v3/mail/send",
        headers=sender.headers,
        json={
            "personalizations": [{"to": [{"email": "alice@example.test"}]}],
            "from": {"email": sender.address()},
            "subject": "Quarterly review",
            "content": content,
        },
    )


async def test_meeting_invitation_from_the_official_client_is_a_calendar_alternative(
    api: ApiServer, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mail = Mail(
        from_email=sender.address(),
        to_emails="alice@example.test",
        subject="Quarterly review",
        plain_text_content="You are invited to the quarterly review.",
        html_content="<p>You are invited to the quarterly review.</p>",
    )
    mail.add_content(Content("text/calendar; method=REQUEST", INVITATION))
    sg = SendGridAPIClient(sender.key, host=api.url)
    assert (await asyncio.to_thread(sg.send, mail)).status_code == 202
    await deliver()
    [received] = await mx.wait_for(1)

    message = parse(received.data)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html", "text/calendar"]
    calendar = parts[2]
    assert calendar.get_param("method") == "REQUEST"
    assert calendar.get_content_charset() in ("us-ascii", "utf-8")
    assert calendar.get_content() == INVITATION  # CRLF lines, as RFC 5545 §3.1 wants them
    assert calendar.get_content_disposition() is None  # a body, not an attachment


async def test_other_types_follow_html_in_the_order_given(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    response = await post(
        client,
        sender,
        [
            {"type": "text/plain", "value": "Plain"},
            {"type": "text/html", "value": "<p>Html</p>"},
            {"type": "text/x-amp-html", "value": "<html amp4email>amp</html>"},
            {"type": "text/calendar; charset=iso-8859-1; method=CANCEL", "value": INVITATION},
        ],
    )
    assert response.status_code == 202, response.text
    await deliver()
    [received] = await mx.wait_for(1)
    parts = list(parse(received.data).iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "text/html",
        "text/x-amp-html",
        "text/calendar",
    ]
    assert parts[3].get_param("method") == "CANCEL"
    assert parts[3].get_content_charset() == "us-ascii"  # what the body is written in


async def test_html_alone_with_a_calendar_is_multipart_alternative(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    response = await post(
        client,
        sender,
        [
            {"type": "text/html", "value": "<p>Invited</p>"},
            {"type": "text/calendar; method=REQUEST", "value": INVITATION},
        ],
    )
    assert response.status_code == 202, response.text
    await deliver()
    [received] = await mx.wait_for(1)
    parts = list(parse(received.data).iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/html", "text/calendar"]


async def test_plain_and_html_must_come_first(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    response = await post(
        client,
        sender,
        [
            {"type": "text/calendar; method=REQUEST", "value": INVITATION},
            {"type": "text/plain", "value": "Plain"},
        ],
    )
    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "message": "If present, text/plain and text/html may only be provided in this order, "
        "followed by any other content.",
        "field": "content",
        "help": None,
    }
    assert await count_rows(db) == (0, 0, 0)


async def test_non_text_content_types_are_refused(
    client: httpx.AsyncClient, sender: Sender, settings: Settings
) -> None:
    for content_type in ("application/pdf", "image/png", "multipart/mixed", "text/"):
        response = await post(
            client,
            sender,
            [{"type": "text/plain", "value": "x"}, {"type": content_type, "value": "x"}],
        )
        assert response.status_code == 400, content_type
        assert response.json()["errors"][0]["field"] == "content.1.type"
