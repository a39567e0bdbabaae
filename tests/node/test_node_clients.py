"""SendGrid's official Node clients (`@sendgrid/mail`, `@sendgrid/client` 8.x) running SendGrid's
documented use cases (sendgrid-nodejs docs/use-cases) against a live Columba, with only the base
URL and the sender's domain changed. The scripts beside this file print what the client got; the
mail the test MX receives is compared with what SendGrid's documentation says it is.

`.ci/run` installs the clients (`npm ci` here); elsewhere these tests are skipped until
`npm ci --prefix tests/node` has been run."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.core import clock
from app.core.db import Database
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import ApiServer, Sender
from tests.test_end_to_end import Deliver, message_view

HERE = Path(__file__).parent
NODE = shutil.which("node")
INSTALLED = (HERE / "node_modules" / "@sendgrid" / "mail").is_dir() and (
    HERE / "node_modules" / "@sendgrid" / "client"
).is_dir()

pytestmark = pytest.mark.skipif(
    NODE is None or not INSTALLED,
    reason="needs node and the SendGrid clients: run `npm ci --prefix tests/node` (.ci/run does)",
)

NodeRun = Callable[..., Any]


@pytest_asyncio.fixture
async def example_org(dns_server: FakeDNS, mx: ScriptedMX) -> AsyncIterator[ScriptedMX]:
    """The use cases' recipients (`…@example.org`) delivered to the test MX."""
    dns_server.add_mx("example.org", (10, "mx1.example.test"))
    yield mx
    dns_server.remove("example.org")


@pytest.fixture
def node(api: ApiServer, sender: Sender) -> NodeRun:
    """Run one use-case script; its JSON output."""

    async def run(script: str, *, ok: bool = True, **env: str) -> Any:
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "SENDGRID_API_KEY": sender.key,
            "SENDGRID_BASE_URL": api.url,
            "SENDER_DOMAIN": sender.address().partition("@")[2],
            **env,
        }
        assert NODE is not None
        process = await asyncio.create_subprocess_exec(
            NODE,
            str(HERE / script),
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert (process.returncode == 0) is ok, (stdout, stderr)
        return json.loads(stdout)

    return run


def parse(data: bytes) -> EmailMessage:
    """A received message, parsed."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage, subtype: str) -> str:
    """The text of one of the message's bodies (`plain`, `html`)."""
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} body"
    return str(part.get_content())


def at_sender_domain(sender: Sender, local: str) -> str:
    """An address at the sending domain, as the scripts write it."""
    return f"{local}@{sender.address().partition('@')[2]}"


def accepted(result: dict[str, Any]) -> str:
    """The X-Message-Id of a 202 answer."""
    assert result["statusCode"] == 202, result
    assert result["body"] is None  # SendGrid answers 202 with an empty body
    return str(result["messageId"])


async def test_single_email_single_recipient(
    node: NodeRun, example_org: ScriptedMX, deliver: Deliver, sender: Sender
) -> None:
    accepted(await node("single-email-single-recipient.js"))
    await deliver()
    [received] = await example_org.wait_for(1)
    assert received.rcpt_tos == ["recipient@example.org"]
    message = parse(received.data)
    assert message["From"] == at_sender_domain(sender, "sender")
    assert message["To"] == "recipient@example.org"
    assert message["Subject"] == "Hello world"
    assert message.get_content_type() == "multipart/alternative"
    assert body_of(message, "plain").strip() == "Hello plain world!"
    assert body_of(message, "html").strip() == "<p>Hello HTML world!</p>"


async def test_single_email_to_multiple_recipients_shows_them_all(
    node: NodeRun, example_org: ScriptedMX, deliver: Deliver
) -> None:
    accepted(await node("single-email-multiple-recipients.js"))
    await deliver()
    [received] = await example_org.wait_for(1)
    assert sorted(received.rcpt_tos) == ["recipient1@example.org", "recipient2@example.org"]
    assert parse(received.data)["To"] == "recipient1@example.org, recipient2@example.org"


async def test_send_multiple_gives_each_recipient_their_own_email(
    node: NodeRun, example_org: ScriptedMX, deliver: Deliver
) -> None:
    accepted(await node("multiple-emails-multiple-recipients.js"))
    await deliver()
    await example_org.wait_for(2)
    to_headers = {rcpt: parse(m.data)["To"] for m in example_org.messages for rcpt in m.rcpt_tos}
    assert to_headers == {
        "recipient1@example.org": "recipient1@example.org",
        "recipient2@example.org": "recipient2@example.org",
    }


async def test_cc_bcc_and_reply_to(
    node: NodeRun, example_org: ScriptedMX, deliver: Deliver, sender: Sender
) -> None:
    accepted(await node("cc-bcc-reply-to.js"))
    await deliver()
    await example_org.wait_for(1)
    rcpts = sorted(r for m in example_org.messages for r in m.rcpt_tos)
    assert rcpts == [f"recipient{i}@example.org" for i in range(1, 5)]
    message = parse(example_org.messages[0].data)
    assert message["To"] == "recipient1@example.org"
    assert message["Cc"] == "recipient2@example.org"
    assert message["Bcc"] is None  # Bcc recipients get the mail, never the header
    assert message["Reply-To"] == at_sender_domain(sender, "othersender")


async def test_attachment_with_a_content_id_stays_an_attachment(
    node: NodeRun, example_org: ScriptedMX, deliver: Deliver
) -> None:
    accepted(await node("attachments.js"))
    await deliver()
    [received] = await example_org.wait_for(1)
    message = parse(received.data)
    # The use case writes `contentId`, which the client sends as it is and the API (SendGrid's
    # and Columba's) does not know: the file is a plain attachment beside the body.
    assert message.get_content_type() == "multipart/mixed"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "some-attachment.pdf"
    assert attachment.get_content() == (HERE / "Document.pdf").read_bytes()
    assert body_of(message, "html").strip() == "<p>Here’s an attachment for you!</p>"


async def test_transactional_template(
    node: NodeRun,
    example_org: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
    sender: Sender,
) -> None:
    template = await client.post(
        "/v1/templates",
        headers=sender.headers,
        json={
            "name": "use case",
            "engine": "handlebars",
            "version": {
                "name": "v1",
                "subject": "{{ subject }}",
                "html": (
                    "<html>\n<head>\n    <title></title>\n</head>\n<body>\n"
                    "Hello {{ name }},\n<br /><br/>\n"
                    "I'm glad you are trying out the template feature!\n<br /><br/>\n"
                    "I hope you are having a great day in {{ city }} :)\n<br /><br/>\n"
                    "</body>\n</html>"
                ),
            },
        },
    )
    assert template.status_code == 201, template.text
    accepted(await node("transactional-templates.js", TEMPLATE_ID=template.json()["id"]))
    await deliver()
    [received] = await example_org.wait_for(1)
    message = parse(received.data)
    assert message["Subject"] == "Testing Templates"
    html = body_of(message, "html")
    assert "Hello Some One," in html
    assert "a great day in Denver :)" in html


async def test_scheduled_send_cancelled_by_its_batch(
    node: NodeRun,
    example_org: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
    sender: Sender,
    travel: Callable[[timedelta], None],
) -> None:
    send_at = int((clock.now() + timedelta(hours=1)).timestamp())
    result = await node("scheduled-send-cancel.js", SEND_AT=str(send_at))
    message_id = accepted(result["send"])
    assert result["cancel"] == {
        "statusCode": 201,
        "body": {"batch_id": result["batchId"], "status": "cancel"},
    }
    assert {"batch_id": result["batchId"], "status": "cancel"} in result["scheduled"]

    travel(timedelta(hours=2))
    await deliver()
    assert example_org.messages == []
    view = await message_view(client, sender, message_id)
    assert [r["status"] for r in view["recipients"]] == ["cancelled"]


async def test_categories(
    node: NodeRun,
    example_org: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
    sender: Sender,
) -> None:
    message_id = accepted(await node("categories.js"))
    view = await message_view(client, sender, message_id)
    assert view["categories"] == ["Transactional", "My category"]
    await deliver()
    await example_org.wait_for(1)
    listed = await client.get("/v3/categories", headers=sender.headers)
    assert listed.json() == [{"category": "My category"}, {"category": "Transactional"}]


async def test_custom_args_reach_the_events_per_personalization(
    node: NodeRun,
    example_org: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
    sender: Sender,
) -> None:
    message_id = accepted(await node("custom-args.js"))
    view = await message_view(client, sender, message_id)
    args = {r["email"]: r["events"][0]["data"]["custom_args"] for r in view["recipients"]}
    assert args == {
        "recipient1@example.org": {"myCustomArg": "some string", "myArg": "Recipient 1"},
        "recipient2@example.org": {"myCustomArg": "some string", "myArg": "Recipient 2"},
    }
    await deliver()
    await example_org.wait_for(2)
    for received in example_org.messages:  # custom args are for events, never in the mail
        assert "some string" not in received.data.decode()


async def test_sandbox_mode_validates_without_sending(
    node: NodeRun, example_org: ScriptedMX, deliver: Deliver, db: Database
) -> None:
    result = await node("sandbox-mode.js")
    assert result["statusCode"] == 200
    await deliver()
    assert example_org.messages == []
    from tests.messages.test_send_validation import count_rows

    assert await count_rows(db) == (0, 0, 0)


async def test_substitutions_per_personalization(
    node: NodeRun, example_org: ScriptedMX, deliver: Deliver
) -> None:
    accepted(await node("substitutions.js"))
    await deliver()
    await example_org.wait_for(3)
    texts = {
        rcpt: (body_of(parse(m.data), "plain").strip(), body_of(parse(m.data), "html").strip())
        for m in example_org.messages
        for rcpt in m.rcpt_tos
    }
    assert texts == {
        f"recipient{i}@example.org": (f"Ahoy {name}!", f"<p>Ahoy {name}!</p>")
        for i, name in ((1, "Jon"), (2, "Jane"), (3, "Jack"))
    }


async def test_an_error_reaches_the_client_as_sendgrid_words_it(
    node: NodeRun, example_org: ScriptedMX
) -> None:
    result = await node(
        "single-email-single-recipient.js", ok=False, SENDER_DOMAIN="elsewhere.test"
    )
    assert result["code"] == 403
    assert result["body"]["errors"][0]["message"].startswith("The from address does not match")


async def test_stats_read_through_the_client(
    node: NodeRun, example_org: ScriptedMX, deliver: Deliver
) -> None:
    accepted(await node("categories.js"))
    example_org.reply_at("RCPT", 550, "5.1.1 no such user", to="recipient@example.org")
    await deliver()
    today = clock.now().date().isoformat()
    result = await node("stats.js", START_DATE=today)

    assert {part["statusCode"] for part in result.values()} == {200}
    [day] = result["stats"]["body"]
    assert day["date"] == today
    assert day["stats"][0]["metrics"]["bounces"] == 1
    assert result["categories"]["body"] == [
        {"category": "My category"},
        {"category": "Transactional"},
    ]
    sums = {s["name"]: s["metrics"]["bounces"] for s in result["sums"]["body"]["stats"]}
    assert sums == {"My category": 1, "Transactional": 1}
    [providers] = result["providers"]["body"]
    assert [(s["name"], s["metrics"]["bounces"]) for s in providers["stats"]] == [("Other", 1)]
    assert result["classifications"]["body"] == {
        "result": [{"date": today, "stats": [{"classification": "Invalid Address", "count": 1}]}]
    }
