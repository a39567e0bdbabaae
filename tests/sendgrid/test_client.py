"""The official `sendgrid` client, unchanged, against a live Columba: what it sends arrives as
it would through SendGrid, and its error classes fire where SendGrid's would."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import pytest_asyncio
from python_http_client.exceptions import (
    BadRequestsError,
    ForbiddenError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    Bcc,
    Category,
    Cc,
    ContentId,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    Mail,
    MailSettings,
    Personalization,
    SandBoxMode,
    SendAt,
    To,
)

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from tests.fakes.mx import ScriptedMX
from tests.support import ApiServer, Sender, make_key
from tests.test_end_to_end import Deliver, message_view

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


async def call(client: SendGridAPIClient, mail: Mail) -> Any:
    """The client is synchronous (urllib): run it in a thread while the loop serves the API."""
    return await asyncio.to_thread(client.send, mail)


@pytest.fixture
def sg(api: ApiServer, sender: Sender) -> SendGridAPIClient:
    """The official client pointed at Columba, as a migrating team would configure it."""
    return SendGridAPIClient(sender.key, host=api.url)


def parse(data: bytes) -> EmailMessage:
    """A received message, parsed."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def received_by(mx: ScriptedMX) -> dict[str, EmailMessage]:
    """Each delivered copy, by recipient address."""
    return {rcpt: parse(m.data) for m in mx.messages for rcpt in m.rcpt_tos}


async def test_plain_and_html_content_is_delivered(
    sg: SendGridAPIClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mail = Mail(
        from_email=(sender.address("orders"), "Örders Désk"),
        to_emails=To("alice@example.test", "Alice"),
        subject="Your order ✓",
        plain_text_content="Thanks for your order.",
        html_content="<p>Thanks for your <b>order</b>.</p>",
    )
    response = await call(sg, mail)
    assert response.status_code == 202
    assert response.body == b""
    assert response.headers["X-Message-Id"]
    await deliver()
    [received] = await mx.wait_for(1)
    parsed = parse(received.data)
    assert parsed["Subject"] == "Your order ✓"
    assert parsed["From"].addresses[0].display_name == "Örders Désk"
    assert parsed["To"] == "Alice <alice@example.test>"
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().strip() == "Thanks for your order."
    assert "<b>order</b>" in html.get_content()


async def test_several_personalizations_with_cc_and_bcc(
    sg: SendGridAPIClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
) -> None:
    mail = Mail(from_email=sender.address(), subject="Team update")
    mail.add_content("Hello team.", "text/plain")
    first = Personalization()
    first.add_to(To("alice@example.test"))
    first.add_cc(Cc("carol@example.test"))
    first.add_bcc(Bcc("boss@example.test"))
    second = Personalization()
    second.add_to(To("bob@example.test"))
    second.subject = "Team update for Bob"
    mail.add_personalization(first)
    mail.add_personalization(second)
    response = await call(sg, mail)
    assert response.status_code == 202
    await deliver()
    await mx.wait_for(2)
    copies = received_by(mx)
    assert set(copies) == {
        "alice@example.test",
        "carol@example.test",
        "boss@example.test",
        "bob@example.test",
    }
    assert copies["alice@example.test"]["Cc"] == "carol@example.test"
    assert "Bcc" not in copies["alice@example.test"]
    assert copies["bob@example.test"]["To"] == "bob@example.test"
    assert copies["bob@example.test"]["Subject"] == "Team update for Bob"
    assert copies["alice@example.test"]["Subject"] == "Team update"
    # The first personalization is one copy (one transaction); the second its own copy.
    assert len(mx.messages) == 2
    assert copies["alice@example.test"]["Message-ID"] != copies["bob@example.test"]["Message-ID"]
    message_id = response.headers["X-Message-Id"]
    view = await message_view(client, sender, message_id)
    for recipient in view["recipients"]:
        processed = recipient["events"][0]
        assert processed["type"] == "processed"
        assert processed["data"]["sg_message_id"] == f"{message_id}.{recipient['id']}"


async def test_attachment_and_inline_image(
    sg: SendGridAPIClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mail = Mail(
        from_email=sender.address(),
        to_emails="alice@example.test",
        subject="Invoice",
        plain_text_content="See the attached invoice.",
        html_content='<p>Invoice</p><img src="cid:logo">',
    )
    mail.add_attachment(
        Attachment(
            FileContent(base64.b64encode(b"%PDF-1.4 invoice").decode()),
            FileName("invoice.pdf"),
            FileType("application/pdf"),
            Disposition("attachment"),
        )
    )
    mail.add_attachment(
        Attachment(
            FileContent(base64.b64encode(PNG).decode()),
            FileName("logo.png"),
            FileType("image/png"),
            Disposition("inline"),
            ContentId("logo"),
        )
    )
    assert (await call(sg, mail)).status_code == 202
    await deliver()
    [received] = await mx.wait_for(1)
    parsed = parse(received.data)
    assert parsed.get_content_type() == "multipart/mixed"
    related = next(parsed.iter_parts())
    assert related.get_content_type() == "multipart/related"
    image = next(p for p in parsed.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo>"
    assert image.get_content() == PNG
    [invoice] = list(parsed.iter_attachments())
    assert invoice.get_filename() == "invoice.pdf"
    assert invoice.get_content() == b"%PDF-1.4 invoice"


async def test_categories_and_custom_args_reach_the_events(
    sg: SendGridAPIClient, sender: Sender, client: httpx.AsyncClient
) -> None:
    mail = Mail(
        from_email=sender.address(),
        to_emails="alice@example.test",
        subject="Receipt",
        plain_text_content="Paid.",
    )
    mail.add_category(Category("receipt"))
    mail.add_category(Category("shop"))
    mail.add_custom_arg(CustomArg("order_id", "1234"))
    response = await call(sg, mail)
    view = await message_view(client, sender, response.headers["X-Message-Id"])
    assert sorted(view["categories"]) == ["receipt", "shop"]  # the helper prepends each one
    data = view["recipients"][0]["events"][0]["data"]
    assert data["category"] == view["categories"]
    assert data["custom_args"] == {"order_id": "1234"}


async def test_dynamic_template_data_renders_a_handlebars_template(
    sg: SendGridAPIClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
) -> None:
    template = await client.post(
        "/v1/templates",
        headers=sender.headers,
        json={
            "name": "shipped",
            "engine": "handlebars",
            "version": {
                "name": "v1",
                "subject": "{{{subject}}}",
                "html": "<p>Hi {{name}}</p>{{#each items}}<li>{{this}}</li>{{/each}}",
                "text": "Hi {{name}}{{#unless vip}} (standard){{/unless}}",
            },
        },
    )
    assert template.status_code == 201, template.text
    mail = Mail(
        from_email=sender.address(),
        to_emails=[
            To(
                "alice@example.test",
                dynamic_template_data={
                    "name": "Al & Co",
                    "items": ["a"],
                    "subject": "Yours, Al",
                    "vip": True,
                },
            ),
            To(
                "bob@example.test",
                dynamic_template_data={"name": "Bob", "items": ["x", "y"], "subject": "Yours, Bob"},
            ),
        ],
        is_multiple=True,
    )
    mail.template_id = template.json()["id"]
    assert (await call(sg, mail)).status_code == 202
    await deliver()
    await mx.wait_for(2)
    copies = received_by(mx)
    alice, bob = copies["alice@example.test"], copies["bob@example.test"]
    assert alice["Subject"] == "Yours, Al"
    assert bob["Subject"] == "Yours, Bob"
    alice_html = alice.get_body(("html",))
    bob_html = bob.get_body(("html",))
    assert alice_html is not None
    assert bob_html is not None
    assert "<p>Hi Al &amp; Co</p><li>a</li>" in alice_html.get_content()
    assert "<li>x</li><li>y</li>" in bob_html.get_content()
    bob_text = bob.get_body(("plain",))
    assert bob_text is not None
    assert "Hi Bob (standard)" in bob_text.get_content()


async def test_send_at_schedules_until_due(
    sg: SendGridAPIClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
    travel: Callable[[timedelta], None],
) -> None:
    mail = Mail(
        from_email=sender.address(),
        to_emails="later@example.test",
        subject="Later",
        plain_text_content="Scheduled.",
    )
    mail.send_at = SendAt(int((clock.now() + timedelta(hours=2)).timestamp()))
    response = await call(sg, mail)
    message_id = response.headers["X-Message-Id"]
    await deliver()
    assert mx.messages == []
    view = await message_view(client, sender, message_id)
    assert view["recipients"][0]["status"] == "scheduled"
    travel(timedelta(hours=2, minutes=1))
    await deliver()  # the sweeper finds the now-due recipient
    await mx.wait_for(1)
    view = await message_view(client, sender, message_id)
    assert view["recipients"][0]["status"] == "delivered"


async def test_sandbox_mode_validates_without_sending(
    sg: SendGridAPIClient, sender: Sender, db: Database
) -> None:
    mail = Mail(
        from_email=sender.address(),
        to_emails="alice@example.test",
        subject="Test",
        plain_text_content="Only a test.",
    )
    mail.mail_settings = MailSettings()
    mail.mail_settings.sandbox_mode = SandBoxMode(True)
    response = await call(sg, mail)
    assert response.status_code == 200
    from tests.messages.test_send_validation import count_rows

    assert await count_rows(db) == (0, 0, 0)


async def test_bad_request_raises_bad_requests_error(sg: SendGridAPIClient, sender: Sender) -> None:
    mail = Mail(from_email=sender.address(), to_emails="@example.test", subject="x")
    mail.add_content("x", "text/plain")
    with pytest.raises(BadRequestsError) as raised:
        await call(sg, mail)
    errors = raised.value.to_dict["errors"]
    assert errors[0] == {
        "message": "Does not contain a valid address.",
        "field": "personalizations.0.to.0.email",
        "help": None,
    }


async def test_unknown_key_raises_unauthorized_error(api: ApiServer, sender: Sender) -> None:
    stranger = SendGridAPIClient("SG.nope.nope", host=api.url)
    mail = Mail(sender.address(), "alice@example.test", "x", "x")
    with pytest.raises(UnauthorizedError):
        await call(stranger, mail)


async def test_key_without_mail_send_raises_forbidden_error(
    api: ApiServer, sender: Sender, db: Database
) -> None:
    key = await make_key(db, account="acme", scopes=["messages.read"])
    mail = Mail(sender.address(), "alice@example.test", "x", "x")
    with pytest.raises(ForbiddenError) as raised:
        await call(SendGridAPIClient(key, host=api.url), mail)
    assert raised.value.to_dict["errors"][0]["message"].startswith("access forbidden")


async def test_unverified_sender_raises_forbidden_error_in_sendgrids_words(
    sg: SendGridAPIClient,
) -> None:
    mail = Mail("me@elsewhere.test", "alice@example.test", "x", "x")
    with pytest.raises(ForbiddenError) as raised:
        await call(sg, mail)
    [error] = raised.value.to_dict["errors"]
    assert error["message"].startswith("The from address does not match a verified Sender")
    assert error["field"] == "from.email"


@pytest_asyncio.fixture
async def small_api(settings: Settings) -> AsyncIterator[ApiServer]:
    """An API whose message limit is 64 KB and whose keys may make 3 requests a minute."""
    limited = settings.model_copy(update={"max_message_size": 64 * 1024, "rate_limit": "3/1m"})
    async with ApiServer.running(limited) as server:
        yield server


@pytest.mark.parametrize("size", [200 * 1024, 16 * 1024 * 1024], ids=["200 KB", "16 MB"])
async def test_oversized_message_raises_payload_too_large_error(
    small_api: ApiServer, sender: Sender, size: int
) -> None:
    # 16 MB does not fit in the socket buffers: the client is still sending when the 413 is
    # written, and sees it only if the server reads on rather than closing the connection.
    mail = Mail(sender.address(), "alice@example.test", "big", "y" * size)
    with pytest.raises(PayloadTooLargeError):
        await call(SendGridAPIClient(sender.key, host=small_api.url), mail)


async def test_rate_limit_raises_too_many_requests_error(
    small_api: ApiServer, sender: Sender
) -> None:
    sg = SendGridAPIClient(sender.key, host=small_api.url)
    mail = Mail(sender.address(), "alice@example.test", "x", "x")
    for _ in range(3):
        response = await call(sg, mail)
        assert response.status_code == 202
    with pytest.raises(TooManyRequestsError) as raised:
        await call(sg, mail)
    assert raised.value.to_dict == {
        "errors": [{"message": "too many requests", "field": None, "help": None}]
    }
    assert raised.value.headers["X-RateLimit-Remaining"] == "0"
    assert raised.value.headers["X-RateLimit-Limit"] == "3"
