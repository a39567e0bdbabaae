"""POST /v3/mail/send: SendGrid's limits, error texts and field paths; nothing half-written."""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any

import httpx
import pytest

from app.core.db import Database
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType
from tests.messages.test_send_validation import count_rows
from tests.support import Sender
from tests.test_end_to_end import message_view


def mail(sender: Sender, **overrides: Any) -> dict[str, Any]:
    """A valid v3 body with some fields replaced."""
    body = {
        "personalizations": [{"to": [{"email": "alice@example.test"}]}],
        "from": {"email": sender.address()},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi."}],
    }
    return {**body, **overrides}


async def post(client: httpx.AsyncClient, sender: Sender, body: Any) -> httpx.Response:
    """POST /v3/mail/send as the sender."""
    return await client.post("/v3/mail/send", json=body, headers=sender.headers)


def zipped(name: str) -> str:
    """A zip archive holding one file, base64-encoded."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, b"MZ...")
    return base64.b64encode(buffer.getvalue()).decode()


def many(count: int, domain: str = "example.test") -> list[dict[str, str]]:
    """`count` distinct addresses."""
    return [{"email": f"user{i}@{domain}"} for i in range(count)]


ERRORS = [
    (
        {"personalizations": []},
        "personalizations",
        "The personalizations field is required and must have at least one personalization.",
    ),
    (
        {"from": None},
        "from.email",
        "The from object must be provided for every email send.",
    ),
    ({"from": {"email": "nope"}}, "from.email", "The from email does not contain a valid address."),
    (
        {"personalizations": [{"to": []}]},
        "personalizations.0.to",
        "The to array is required for all personalization objects",
    ),
    (
        {"personalizations": [{"to": [{"email": "a@example.test"}, {"email": "bad"}]}]},
        "personalizations.0.to.1.email",
        "Does not contain a valid address.",
    ),
    (
        {
            "personalizations": [
                {"to": [{"email": "a@example.test"}], "cc": [{"email": "A@example.test"}]}
            ]
        },
        "personalizations.0",
        "Each email address in the personalization block should be unique between to, cc, and "
        "bcc. We found the first duplicate instance of [A@example.test] in the "
        "personalizations.0.cc field.",
    ),
    ({"subject": None}, "subject", "The subject is required."),
    ({"content": []}, "content", "Unless a valid template_id is provided, the content parameter"),
    (
        {"content": [{"type": "text/plain", "value": ""}]},
        "content.0.value",
        "The content value must be a string at least one character in length.",
    ),
    (
        {"content": [{"type": "text/html", "value": "<p>x"}, {"type": "text/plain", "value": "x"}]},
        "content",
        "If present, text/plain and text/html may only be provided in this order",
    ),
    ({"categories": [f"c{i}" for i in range(11)]}, "categories", "more than 10 categories"),
    ({"categories": ["x" * 256]}, "categories.0", "may not exceed 255 characters"),
    ({"custom_args": {"blob": "x" * 10_001}}, "custom_args", "may not exceed 10,000 bytes"),
    ({"custom_args": {"n": 1}}, "custom_args.n", "Invalid type. Expected: string, given: integer."),
    ({"headers": {"Subject": "x"}}, "headers.Subject", "is reserved"),
    ({"headers": {"X-Sg-Id": "x"}}, "headers.X-Sg-Id", "is reserved"),
    ({"headers": {"X-Evil": "a\r\nBcc: b@example.test"}}, "headers.X-Evil", "CR, LF, NUL"),
    ({"subject": "Hi\r\nBcc: b@example.test"}, "subject", "CR, LF, NUL"),
    (
        {"attachments": [{"content": "%%%", "filename": "a.txt"}]},
        "attachments.0.content",
        "The attachment content must be base64 encoded.",
    ),
    (
        {"attachments": [{"content": "aGk=", "filename": "run.exe"}]},
        "attachments.0.filename",
        "blocked by Gmail",
    ),
    (
        {"attachments": [{"content": zipped("setup.scr"), "filename": "a.zip"}]},
        "attachments.0.filename",
        "the archive contains setup.scr",
    ),
    (
        {"attachments": [{"content": "TVqQAAMAAAA=", "filename": "report.pdf"}]},
        "attachments.0.filename",
        "executable program",
    ),
    (
        {"attachments": [{"content": "aGk=", "filename": "p.png", "type": "image/png"}]},
        "attachments.0.filename",
        "not image/png as declared",
    ),
    (
        {"attachments": [{"content": "aGk=", "filename": "a.png", "disposition": "inline"}]},
        "attachments.0.content_id",
        "The content_id parameter is required if disposition is set to inline.",
    ),
    ({"batch_id": "no-such-batch"}, "batch_id", "invalid batch id"),
    ({"custom_args": {"k": "\u0000"}}, "custom_args.k", "NUL characters are not allowed."),
    ({"template_id": "d-00000000000000000000000000000000"}, "template_id", "is not a template"),
    ({"send_at": 4_102_444_800}, "send_at", "send_at may be at most 7d ahead"),
    ({"send_at": -5}, "send_at", "valid Unix timestamp"),
    ({"ip_pool_name": "x"}, "ip_pool_name", "between 2 and 64 characters"),
    (
        {"reply_to": {"email": "r@example.test"}, "reply_to_list": [{"email": "s@example.test"}]},
        "reply_to",
        "either reply_to or reply_to_list",
    ),
    (
        {
            "mail_settings": {
                "bypass_list_management": {"enable": True},
                "bypass_spam_management": {"enable": True},
            }
        },
        "mail_settings.bypass_list_management",
        "cannot be combined",
    ),
    (
        {"personalizations": [{"to": many(1001)}]},
        "personalizations",
        "The total number of recipients must be no more than 1000.",
    ),
    (
        {"personalizations": [{"to": [{"email": f"p{i}@example.test"}]} for i in range(1001)]},
        "personalizations",
        "at most 1000 personalizations",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "message"), ERRORS)
async def test_sendgrid_errors_with_field_paths_and_nothing_written(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    overrides: dict[str, Any],
    field: str,
    message: str,
) -> None:
    body = {k: v for k, v in mail(sender, **overrides).items() if v is not None}
    response = await post(client, sender, body)
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert all(set(error) == {"message", "field", "help"} for error in errors)
    matching = [e for e in errors if e["field"] == field]
    assert matching, errors
    assert any(message in e["message"] for e in matching), matching
    assert await count_rows(db) == (0, 0, 0)


async def test_malformed_json_is_sendgrids_bad_request(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    response = await client.post(
        "/v3/mail/send",
        content=b"{nope",
        headers={**sender.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Bad Request", "field": None, "help": None}]}


async def test_a_thousand_recipients_in_a_thousand_personalizations_are_accepted(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    body = mail(
        sender,
        personalizations=[
            {"to": [{"email": f"p{i}@example.test"}], "custom_args": {"n": str(i)}}
            for i in range(1000)
        ],
    )
    response = await post(client, sender, body)
    assert response.status_code == 202, response.text
    assert await count_rows(db) == (1, 1000, 1000)


async def test_success_is_202_with_an_empty_body_and_the_message_id(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    response = await post(client, sender, mail(sender))
    assert response.status_code == 202
    assert response.content == b""
    view = await message_view(client, sender, response.headers["X-Message-Id"])
    [recipient] = view["recipients"]
    data = recipient["events"][0]["data"]
    assert data["sg_message_id"] == f"{view['id']}.{recipient['id']}"
    assert data["smtp-id"] == view["message_id"]


@pytest.mark.parametrize(
    ("bypass", "suppression", "status"),
    [
        (None, SuppressionType.BOUNCE, "dropped"),
        ("bypass_bounce_management", SuppressionType.BOUNCE, "queued"),
        ("bypass_bounce_management", SuppressionType.COMPLAINT, "dropped"),
        ("bypass_spam_management", SuppressionType.COMPLAINT, "queued"),
        ("bypass_unsubscribe_management", SuppressionType.UNSUBSCRIBE, "queued"),
        ("bypass_unsubscribe_management", SuppressionType.BOUNCE, "dropped"),
        ("bypass_list_management", SuppressionType.MANUAL, "queued"),
        ("bypass_list_management", SuppressionType.BOUNCE, "queued"),
    ],
)
async def test_bypass_switches_are_honoured_against_suppressions(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    bypass: str | None,
    suppression: SuppressionType,
    status: str,
) -> None:
    async with db.session() as session:
        await suppressions.suppress(
            session,
            account_id=sender.account_id,
            email="alice@example.test",
            type=suppression,
            reason="test",
        )
        await session.commit()
    settings = {bypass: {"enable": True}} if bypass else {}
    response = await post(client, sender, mail(sender, mail_settings=settings))
    assert response.status_code == 202
    view = await message_view(client, sender, response.headers["X-Message-Id"])
    assert view["recipients"][0]["status"] == status


async def test_every_response_carries_rate_limit_headers(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    responses = [
        await post(client, sender, mail(sender)),
        await post(client, sender, mail(sender, subject=None, content=[])),
        await client.post("/v3/mail/send", json={}, headers={"Authorization": "Bearer SG.x.y"}),
        await client.post("/v3/mail/send", json={}),
        await client.get("/v3/mail/batch/unknown", headers=sender.headers),
    ]
    assert [r.status_code for r in responses] == [202, 400, 401, 401, 404]
    for response in responses:
        assert int(response.headers["X-RateLimit-Limit"]) == 10000
        assert int(response.headers["X-RateLimit-Remaining"]) < 10000
        assert int(response.headers["X-RateLimit-Reset"]) > 0
