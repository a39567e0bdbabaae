"""The official `sendgrid` Python client: the documented use cases test_client.py leaves out
(sendgrid-python use_cases: multiple emails with substitutions, reply-to, a scheduled send
cancelled through its batch), with only the host and the sender's domain changed."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import timedelta

import httpx
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    BatchId,
    ContentId,
    Disposition,
    FileContent,
    FileName,
    FileType,
    Mail,
    ReplyTo,
    SendAt,
    To,
)

from app.core import clock
from tests.fakes.mx import ScriptedMX
from tests.sendgrid.test_client import call, received_by, sg  # noqa: F401 (a fixture)
from tests.support import Sender
from tests.test_end_to_end import Deliver, message_view


async def test_multiple_emails_with_substitutions_and_reply_to(
    sg: SendGridAPIClient,  # noqa: F811 (the fixture imported above)
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
) -> None:
    mail = Mail(
        from_email=sender.address(),
        to_emails=[
            To("jon@example.test", substitutions={"-name-": "Jon"}),
            To("jane@example.test", substitutions={"-name-": "Jane"}),
        ],
        subject="Hi -name-",
        plain_text_content="Hello -name-, how are you?",
        is_multiple=True,
    )
    mail.reply_to = ReplyTo("help@example.test", "Help desk")
    assert (await call(sg, mail)).status_code == 202
    await deliver()
    await mx.wait_for(2)
    copies = received_by(mx)
    for address, name in (("jon@example.test", "Jon"), ("jane@example.test", "Jane")):
        copy = copies[address]
        assert copy["To"] == address  # each its own email
        assert copy["Subject"] == f"Hi {name}"
        assert copy.get_content().strip() == f"Hello {name}, how are you?"
        assert copy["Reply-To"] == "Help desk <help@example.test>"


async def test_scheduled_send_cancelled_through_its_batch(
    sg: SendGridAPIClient,  # noqa: F811
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
    travel: Callable[[timedelta], None],
) -> None:
    batch = await asyncio.to_thread(sg.client.mail.batch.post)
    assert batch.status_code == 201
    batch_id = batch.to_dict["batch_id"]
    mail = Mail(
        from_email=sender.address(),
        to_emails="later@example.test",
        subject="Later",
        plain_text_content="Scheduled.",
    )
    mail.send_at = SendAt(int((clock.now() + timedelta(hours=1)).timestamp()))
    mail.batch_id = BatchId(batch_id)
    sent = await call(sg, mail)
    assert sent.status_code == 202

    cancel = await asyncio.to_thread(
        sg.client.user.scheduled_sends.post,
        request_body={"batch_id": batch_id, "status": "cancel"},
    )
    assert cancel.status_code == 201
    assert cancel.to_dict == {"batch_id": batch_id, "status": "cancel"}
    listed = await asyncio.to_thread(sg.client.user.scheduled_sends._(batch_id).get)
    assert listed.to_dict == [{"batch_id": batch_id, "status": "cancel"}]

    travel(timedelta(hours=2))
    await deliver()
    assert mx.messages == []
    view = await message_view(client, sender, sent.headers["X-Message-Id"])
    assert view["recipients"][0]["status"] == "cancelled"


async def test_attachment_with_a_content_id_but_disposition_attachment_is_an_attachment(
    sg: SendGridAPIClient,  # noqa: F811
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
) -> None:
    mail = Mail(
        from_email=sender.address(),
        to_emails="alice@example.test",
        subject="Report",
        plain_text_content="The report is attached.",
        html_content="<p>The report is attached.</p>",
    )
    mail.add_attachment(
        Attachment(
            FileContent(base64.b64encode(b"%PDF-1.4 report").decode()),
            FileName("report.pdf"),
            FileType("application/pdf"),
            Disposition("attachment"),
            ContentId("report"),
        )
    )
    assert (await call(sg, mail)).status_code == 202
    await deliver()
    await mx.wait_for(1)
    message = received_by(mx)["alice@example.test"]
    # The disposition decides (SendGrid): a file beside the body, no multipart/related.
    assert message.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
    ]
    [report] = list(message.iter_attachments())
    assert report.get_content_disposition() == "attachment"
    assert report.get_filename() == "report.pdf"
    assert report["Content-ID"] == "<report>"
    assert report.get_content() == b"%PDF-1.4 report"
