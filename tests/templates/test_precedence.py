"""Which subject and content a templated send carries, as SendGrid documents it: every
combination of the request's subject and content, the template's parts, a personalization's
subject and the template's generation, sent through the official client to a test MX and read
back from the mail received.

tsg_mail_v3.yaml, template_id: "A template that contains a subject and content—either text
or html—will override any subject and content values specified at the personalizations or
message level." A dynamic template's subject is its own (a Handlebars expression over the
copy's dynamic_template_data); a legacy template takes the request's subject and content into
its `<%subject%>` and `<%body%>` tags and the substitutions after that.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import html as html_text
import json
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import BadRequestsError
from sendgrid import SendGridAPIClient

from app.core.db import Database
from app.templates.models import TemplateVersion
from tests.fakes.mx import ScriptedMX
from tests.support import ApiServer, Sender
from tests.test_end_to_end import Deliver, message_view

REQUEST_TEXT = "Request text for -name-"
REQUEST_HTML = "<p>Request html for -name-</p>"
PERSONAL_SUBJECT = "Personal subject"
REQUEST_SUBJECT = "Request subject"

# The templates' parts, by generation; "html", "plain" or "both" say which a version has.
DYNAMIC = {"subject": "Order {{n}}", "html": "<b>{{name}} html</b>", "plain": "{{name}} plain"}
LEGACY = {
    "subject": "[Acme] <%subject%>",
    "html": "<div>-name- framed: <%body%></div>",
    "plain": "-name- framed: <%body%>",
}


@dataclass(frozen=True)
class Case:
    """One combination."""

    generation: str  # legacy | dynamic
    template: str  # html | plain | both: the parts the template version has
    content: str  # text | html | both: the request's content
    subject: bool  # whether the request has a message-level subject
    template_subject: bool = True  # False: a dynamic template's is empty, a legacy one's the tag


CASES = [
    Case(generation, template, content, subject, template_subject)
    for generation in ("dynamic", "legacy")
    for template in ("html", "plain", "both")
    for content in ("text", "html", "both")
    for subject in (True, False)
    for template_subject in (True, False)
]
# SendGrid sends a dynamic template whose subject is empty with no subject, whatever the
# request's (sendgrid/sendgrid-go#428); a legacy template's subject may be the tag alone.
NO_SUBJECT = {"dynamic": "", "legacy": "<%subject%>"}


def _has(parts: str, part: str) -> bool:
    return parts in (part, "both")


def expected(case: Case, personal_subject: str | None) -> tuple[str, str | None, str | None]:
    """What SendGrid's documentation says the copy carries: subject, text, html."""
    if case.generation == "dynamic":
        return (
            "Order 7" if case.template_subject else "",
            "Ann plain" if _has(case.template, "plain") else None,
            "<b>Ann html</b>" if _has(case.template, "html") else None,
        )
    subject = personal_subject or (REQUEST_SUBJECT if case.subject else "")
    request_text = REQUEST_TEXT if _has(case.content, "text") else "Request html for -name-"
    request_html = (
        REQUEST_HTML
        if _has(case.content, "html")
        else html_text.escape(REQUEST_TEXT).replace("\n", "<br>\n")
    )
    text = f"-name- framed: {request_text}" if _has(case.template, "plain") else None
    html = f"<div>-name- framed: {request_html}</div>" if _has(case.template, "html") else None
    return (
        f"[Acme] {subject}" if case.template_subject else subject,
        text.replace("-name-", "Ann") if text else None,
        html.replace("-name-", "Ann") if html else None,
    )


async def make_template(client: httpx.AsyncClient, sender: Sender, case: Case) -> str:
    """A template of the case's generation with the case's parts, through /v3/templates."""
    created = await client.post(
        "/v3/templates",
        headers=sender.headers,
        json={"name": "t", "generation": case.generation},
    )
    assert created.status_code == 201, created.text
    parts = DYNAMIC if case.generation == "dynamic" else LEGACY
    version: dict[str, Any] = {
        "name": "v1",
        "subject": parts["subject"] if case.template_subject else NO_SUBJECT[case.generation],
        "generate_plain_content": False,
    }
    if _has(case.template, "html"):
        version["html_content"] = parts["html"]
    if _has(case.template, "plain"):
        version["plain_content"] = parts["plain"]
    template_id: str = created.json()["id"]
    added = await client.post(
        f"/v3/templates/{template_id}/versions", headers=sender.headers, json=version
    )
    assert added.status_code == 201, added.text
    return template_id


def request_body(case: Case, sender: Sender, template_id: str) -> dict[str, Any]:
    """Two personalizations, one with a subject of its own; substitutions and dynamic data
    as each generation takes them."""
    per_copy: dict[str, Any] = (
        {"dynamic_template_data": {"name": "Ann", "n": 7}}
        if case.generation == "dynamic"
        else {"substitutions": {"-name-": "Ann"}}
    )
    content = []
    if _has(case.content, "text"):
        content.append({"type": "text/plain", "value": REQUEST_TEXT})
    if _has(case.content, "html"):
        content.append({"type": "text/html", "value": REQUEST_HTML})
    body: dict[str, Any] = {
        "from": {"email": sender.address()},
        "personalizations": [
            {"to": [{"email": "own@example.test"}], "subject": PERSONAL_SUBJECT, **per_copy},
            {"to": [{"email": "plain@example.test"}], **per_copy},
        ],
        "content": content,
        "template_id": template_id,
    }
    if case.subject:
        body["subject"] = REQUEST_SUBJECT
    return body


def parts_of(message: EmailMessage) -> tuple[str, str | None, str | None]:
    """The subject and the text and html parts of a received message."""
    found: dict[str, str] = {}
    for part in message.walk():
        if not part.is_multipart() and part.get_content_type() in ("text/plain", "text/html"):
            assert isinstance(part, EmailMessage)
            found[part.get_content_type()] = part.get_content().rstrip("\r\n")
    return str(message["Subject"] or ""), found.get("text/plain"), found.get("text/html")


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_what_a_templated_send_carries(
    case: Case,
    api: ApiServer,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
) -> None:
    template_id = await make_template(client, sender, case)
    sg = SendGridAPIClient(sender.key, host=api.url)
    response = await asyncio.to_thread(
        sg.client.mail.send.post, request_body=request_body(case, sender, template_id)
    )
    assert response.status_code == 202
    await deliver()
    await mx.wait_for(2)
    received = {
        rcpt: email.message_from_bytes(m.data, policy=email.policy.default)
        for m in mx.messages
        for rcpt in m.rcpt_tos
    }
    for address, personal_subject in (
        ("own@example.test", PERSONAL_SUBJECT),
        ("plain@example.test", None),
    ):
        message = received[address]
        assert isinstance(message, EmailMessage)
        assert parts_of(message) == expected(case, personal_subject), address


async def test_a_stored_template_calling_an_unknown_helper_drops_its_recipient(
    client: httpx.AsyncClient, sender: Sender, db: Database, deliver: Deliver
) -> None:
    """A version saved before its helper was checked (or written to the store directly) is
    never sent with the call rendered as nothing: its recipient is dropped, saying why."""
    created = await client.post(
        "/v3/templates", headers=sender.headers, json={"name": "t", "generation": "dynamic"}
    )
    template_id = created.json()["id"]
    async with db.session() as session:
        session.add(
            TemplateVersion(
                template_id=template_id,
                account_id=sender.account_id,
                name="old",
                subject="Your order",
                html='<p>Ordered {{formatDat orderDate "MM/DD/YYYY"}}</p>',
                active=True,
            )
        )
        await session.commit()
    sent = await client.post(
        "/v1/send",
        headers=sender.headers,
        json={
            "from": sender.address(),
            "template_id": template_id,
            "to": ["ann@example.test"],
        },
    )
    assert sent.status_code == 202, sent.text
    await deliver()
    view = await message_view(client, sender, sent.json()["id"])
    [recipient] = view["recipients"]
    assert recipient["status"] == "dropped"
    reason = recipient["events"][-1]["data"]["response"]
    assert "unknown helper formatDat" in reason


async def test_inline_handlebars_calling_an_unknown_helper_is_refused(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    sent = await client.post(
        "/v1/send",
        headers=sender.headers,
        json={
            "from": sender.address(),
            "to": ["ann@example.test"],
            "subject": "x",
            "html": '<p>{{formatDat when "YYYY"}}</p>',
            "template_engine": "handlebars",
        },
    )
    assert sent.status_code == 400
    [error] = sent.json()["errors"]
    assert error["field"] == "html"
    assert "unknown helper formatDat" in error["message"]


async def test_v1_refuses_a_template_calling_an_unknown_helper(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    created = await client.post(
        "/v1/templates",
        headers=sender.headers,
        json={
            "name": "t",
            "engine": "handlebars",
            "version": {"name": "v", "subject": "{{shout name}}", "text": "x"},
        },
    )
    assert created.status_code == 400
    assert created.json()["errors"][0]["field"] == "subject"
    assert "unknown helper shout" in created.json()["errors"][0]["message"]


async def test_substitutions_beside_a_dynamic_template_are_refused_as_sendgrid_does(
    api: ApiServer, client: httpx.AsyncClient, sender: Sender
) -> None:
    template_id = await make_template(client, sender, Case("dynamic", "html", "text", True))
    body = request_body(Case("dynamic", "html", "text", True), sender, template_id)
    body["personalizations"][1]["substitutions"] = {"-name-": "Ann"}
    sg = SendGridAPIClient(sender.key, host=api.url)
    with pytest.raises(BadRequestsError) as raised:
        await asyncio.to_thread(sg.client.mail.send.post, request_body=body)
    assert json.loads(raised.value.body)["errors"] == [
        {
            "message": "Substitutions may not be used with dynamic templating",
            "field": "personalizations.1.substitutions",
            "help": None,
        }
    ]
