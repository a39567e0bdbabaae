"""The outside audit's inputs (issue 10), each answered with a 4xx in SendGrid's shape and
nothing written, instead of a 500, a stored row that breaks readers, or a message accepted
with 202 that can never be delivered."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.db import Database
from app.messages.models import Message
from tests.support import Sender

SURROGATE = "\ud800"
NATIVE = {"from": "noreply@sender.test", "to": ["x@example.test"], "subject": "Hi", "text": "Hi"}
SENDGRID = {
    "personalizations": [{"to": [{"email": "x@example.test"}]}],
    "from": {"email": "noreply@sender.test"},
    "subject": "Hi",
    "content": [{"type": "text/plain", "value": "Hi"}],
}
DIGITS = "9" * 4301


def raw(document: dict[str, Any], **replace: str) -> bytes:
    """`document` as JSON, with `"@name@"` placeholders replaced by raw JSON text."""
    text = json.dumps(document)
    for name, value in replace.items():
        text = text.replace(f'"@{name}@"', value)
    return text.encode()


def native(**fields: Any) -> dict[str, Any]:
    """A /v1/send body with these fields."""
    return {**NATIVE, **fields}


def sendgrid(**fields: Any) -> dict[str, Any]:
    """A /v3/mail/send body with these fields."""
    return {**SENDGRID, **fields}


SENDS: list[tuple[str, bytes, str | None]] = [
    # Item 2: lone surrogates in every kind of field.
    ("/v1/send", raw(native(metadata={"k": SURROGATE})), "metadata.k"),
    ("/v1/send", raw(native(metadata={SURROGATE: "v"})), None),
    ("/v1/send", raw(native(subject=SURROGATE)), "subject"),
    ("/v1/send", raw(native(text=SURROGATE)), "text"),
    ("/v1/send", raw(native(categories=["a" + SURROGATE])), "categories.0"),
    ("/v1/send", raw(native(to=[{"email": "x@example.test", "name": SURROGATE}])), "to.0.name"),
    (
        "/v1/send",
        raw(native(**{"from": {"email": "noreply@sender.test", "name": SURROGATE}})),
        None,
    ),
    ("/v1/send", raw(native(headers={"X-A": SURROGATE})), "headers.X-A"),
    ("/v3/mail/send", raw(sendgrid(custom_args={"k": SURROGATE})), "custom_args.k"),
    (
        "/v3/mail/send",
        raw(
            sendgrid(
                personalizations=[
                    {"to": [{"email": "x@example.test"}], "custom_args": {"k": SURROGATE}}
                ]
            )
        ),
        "personalizations.0.custom_args.k",
    ),
    # Item 5: malformed input that used to raise.
    ("/v3/mail/send", b"[" * 1000, None),
    ("/v3/mail/send", raw(sendgrid(send_at="@n@"), n=DIGITS), None),
    ("/v1/send", b"[" * 1000, None),
    ("/v1/send", raw(native(metadata={"n": "@n@"}), n=DIGITS), None),
    ("/v1/send", raw(native(send_at="0001-01-01T00:00:00+14:00")), "send_at"),
    (
        "/v1/send",
        raw(
            native(
                to=[], recipients=[{"to": "x@example.test", "send_at": "0001-01-01T00:00:00+14:00"}]
            )
        ),
        "recipients.0.send_at",
    ),
    ("/v3/mail/send", raw(sendgrid(asm={"group_id": 10**27})), "asm.group_id"),
    # Item 7: accepted, then deferred for days: now refused.
    ("/v1/send", raw(native(headers={"X-A\n": "v"})), "headers"),
    ("/v1/send", raw(native(headers={"X-A": "a" * 1500})), "headers"),
    ("/v3/mail/send", raw(sendgrid(headers={"X-A\n": "v"})), "headers"),
    ("/v3/mail/send", raw(sendgrid(headers={"X-A": "a" * 1500})), "headers.X-A"),
    (
        "/v1/send",
        raw(
            native(attachments=[{"content": "aGk=", "filename": "a.txt", "content_type": "0/\x80"}])
        ),
        "attachments.0",
    ),
    # Item 12: headers that are not the sender's to set, and non-finite numbers.
    ("/v1/send", raw(native(headers={"X-SMTPAPI": '{"category": "x"}'})), "headers"),
    ("/v1/send", raw(native(headers={"Authentication-Results": "mx; spf=pass"})), "headers"),
    ("/v1/send", raw(native(headers={"Resent-From": "a@b.test"})), "headers"),
    ("/v1/send", raw(native(headers={"ARC-Seal": "i=1"})), "headers"),
    ("/v3/mail/send", raw(sendgrid(headers={"x-smtpapi": "{}"})), "headers.x-smtpapi"),
    ("/v3/mail/send", raw(sendgrid(headers={"Resent-Date": "x"})), "headers.Resent-Date"),
    (
        "/v3/mail/send",
        raw(sendgrid(headers={"Authentication-Results": "x"})),
        "headers.Authentication-Results",
    ),
    ("/v1/send", raw(native(metadata={"n": "@n@"}), n="NaN"), "metadata.n"),
    ("/v1/send", raw(native(metadata={"n": "@n@"}), n="Infinity"), "metadata.n"),
    ("/v1/send", raw(native(metadata={"n": "@n@"}), n="-Infinity"), "metadata.n"),
    ("/v1/send", raw(native(metadata={"n": "@n@"}), n="1e999"), "metadata.n"),
    ("/v1/send", raw(native(template_data={"n": "@n@"}), n="NaN"), "template_data.n"),
    ("/v3/mail/send", raw(sendgrid(custom_args={"n": "@n@"}), n="NaN"), "custom_args.n"),
]


@pytest.mark.parametrize(("path", "body", "field"), SENDS)
async def test_bad_sends_are_400_and_write_nothing(
    client: httpx.AsyncClient, sender: Sender, db: Database, path: str, body: bytes, field: str
) -> None:
    headers = {**sender.headers, "Content-Type": "application/json"}
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert all(set(error) == {"message", "field", "help"} for error in errors)
    if field is not None:
        assert field in [error["field"] for error in errors], errors
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


SUPPRESSION_LISTS = ["bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes"]
QUERIES = [
    ("/v1/stats?start=0001-01-01", "start"),
    ("/v1/stats?start=9999-12-31&end=9999-12-31", "start"),
    ("/v1/stats?start=2026-01-01&end=9999-12-31", "end"),
    ("/v1/stats?start=0001-01-01T00:00:00%2B14:00", "start"),
    ("/v3/stats?start_date=0001-01-01", "start_date"),
    ("/v3/stats?start_date=2026-01-01&end_date=9999-12-31", "end_date"),
    ("/v3/categories/stats?start_date=0001-01-01&categories=a", "start_date"),
    ("/v3/categories/stats?start_date=9999-12-31&categories=a", "start_date"),
    ("/v1/events?after=" + "9" * 27, "after"),
    ("/v1/events?after=%C2%B2", "after"),  # "²".isdigit() is True
    *[
        (f"/v3/suppression/{name}?start_time=99999999999999", "start_time")
        for name in SUPPRESSION_LISTS
    ],
    *[(f"/v3/suppression/{name}?start_time=-1", "start_time") for name in SUPPRESSION_LISTS],
    *[
        (f"/v3/suppression/{name}?end_time=-99999999999999", "end_time")
        for name in SUPPRESSION_LISTS
    ],
    *[(f"/v3/suppression/{name}?offset=" + "9" * 20, "offset") for name in SUPPRESSION_LISTS],
]


@pytest.mark.parametrize(("path", "field"), QUERIES)
async def test_extreme_query_parameters_are_400(
    client: httpx.AsyncClient, sender: Sender, path: str, field: str
) -> None:
    response = await client.get(path, headers=sender.headers)
    assert response.status_code == 400, response.text
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_extreme_webhook_cursors_and_replay_times_are_400(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    hook = await client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=sender.headers
    )
    assert hook.status_code == 201, hook.text
    base = f"/v1/webhooks/{hook.json()['id']}"
    deliveries = await client.get(f"{base}/deliveries?after={'9' * 27}", headers=sender.headers)
    assert deliveries.status_code == 400, deliveries.text
    replay = await client.post(
        f"{base}/replay", params={"since": "0001-01-01T00:00:00+14:00"}, headers=sender.headers
    )
    assert replay.status_code == 400, replay.text
    assert replay.json()["errors"][0]["field"] == "since"


@pytest.mark.parametrize(
    "change",
    [{"url": None}, {"description": None}, {"format": None}, {"enabled": None}],
)
async def test_webhook_fields_may_not_be_patched_to_null(
    client: httpx.AsyncClient, sender: Sender, change: dict[str, None]
) -> None:
    hook = await client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=sender.headers
    )
    path = f"/v1/webhooks/{hook.json()['id']}"
    response = await client.patch(path, json=change, headers=sender.headers)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == next(iter(change))
    unchanged = await client.get(path, headers=sender.headers)
    assert unchanged.json()["url"] == "http://127.0.0.1:9/h"
    every_type = await client.patch(path, json={"event_types": None}, headers=sender.headers)
    assert every_type.status_code == 200, every_type.text  # null means every type again


VERSION = {"name": "v1", "subject": "Hi", "html": "<p>Hi</p>", "text": "Hi"}


@pytest.mark.parametrize(
    "change",
    [{"subject": None}, {"name": None}, {"html": None, "text": None}, {"html": "", "text": None}],
)
async def test_template_versions_keep_a_name_a_subject_and_a_body(
    client: httpx.AsyncClient, sender: Sender, change: dict[str, Any]
) -> None:
    created = await client.post(
        "/v1/templates", json={"name": "t", "version": VERSION}, headers=sender.headers
    )
    template = created.json()
    path = f"/v1/templates/{template['id']}/versions/{template['versions'][0]['id']}"
    response = await client.patch(path, json=change, headers=sender.headers)
    assert response.status_code == 400, response.text
    assert (await client.get(path, headers=sender.headers)).json()["html"] == "<p>Hi</p>"
    one_left = await client.patch(path, json={"html": None}, headers=sender.headers)
    assert one_left.status_code == 200, one_left.text
    assert one_left.json()["text"] == "Hi"


async def test_a_version_without_html_or_text_is_refused(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    empty = {"name": "v1", "subject": "Hi"}
    created = await client.post(
        "/v1/templates", json={"name": "t", "version": empty}, headers=sender.headers
    )
    assert created.status_code == 400, created.text
    template = await client.post("/v1/templates", json={"name": "t"}, headers=sender.headers)
    added = await client.post(
        f"/v1/templates/{template.json()['id']}/versions",
        json={**empty, "html": ""},
        headers=sender.headers,
    )
    assert added.status_code == 400, added.text
    listed = await client.get("/v1/templates", headers=sender.headers)
    assert [t["versions"] for t in listed.json()] == [[]]
