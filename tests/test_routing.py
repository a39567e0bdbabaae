"""Every route parses JSON strictly and refuses NUL in the URL: one mechanism, every field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.core.db import Database
from app.core.strict_json import NON_FINITE_REFUSED, NUL_REFUSED, SURROGATE_REFUSED
from app.messages.models import Message
from app.suppressions.models import Suppression
from app.templates.models import Template
from app.webhooks.models import Webhook
from tests.support import Sender

OPENAPI = json.loads((Path(__file__).parent.parent / "openapi" / "openapi.json").read_text())
OPERATIONS = [
    # Bodies in JSON only: the unsubscribe page's forms (RFC 8058's one-click POST) are not.
    (
        method.upper(),
        path,
        "application/json" in operation.get("requestBody", {}).get("content", {}),
    )
    for path, operations in OPENAPI["paths"].items()
    for method, operation in operations.items()
]
WITH_BODY = [(method, path) for method, path, body in OPERATIONS if body]


def concrete(path: str) -> str:
    """The path with every parameter filled in."""
    return re.sub(r"\{[^}]+\}", "x", path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (rb'{"metadata": {"a": "\ud800"}, "name": "x"}', SURROGATE_REFUSED),
        (b'{"metadata": {"a": "\xed\xa0\x80"}}', None),  # a surrogate encoded as UTF-8
        (rb'{"reason": "a\u0000b"}', NUL_REFUSED),
        (b'{"metadata": {"a": NaN}}', NON_FINITE_REFUSED),
    ],
)
@pytest.mark.parametrize(("method", "path"), WITH_BODY)
async def test_every_body_refuses_what_cannot_be_stored(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    method: str,
    path: str,
    raw: bytes,
    message: str | None,
) -> None:
    headers = {**sender.headers, "Content-Type": "application/json"}
    response = await client.request(method, concrete(path), content=raw, headers=headers)
    assert response.status_code == 400, response.text
    if message is not None:
        assert response.json()["errors"][0]["message"] == message
    async with db.session() as session:
        for table in (Message, Template, Webhook, Suppression):
            assert await session.scalar(select(func.count()).select_from(table)) == 0


@pytest.mark.parametrize(("method", "path", "_"), OPERATIONS)
async def test_every_route_refuses_nul_in_the_query(
    client: httpx.AsyncClient, sender: Sender, method: str, path: str, _: bool
) -> None:
    """Also shows that every route is a StrictJsonRoute, whatever router it comes from."""
    response = await client.request(method, concrete(path) + "?email=a%00b", headers=sender.headers)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == [{"message": NUL_REFUSED, "field": "email", "help": None}]


@pytest.mark.parametrize(
    "path", ["/v1/messages/a%00b", "/v1/suppressions/a%00b@example.test", "/v1/webhooks/%00"]
)
async def test_path_parameters_refuse_nul(
    client: httpx.AsyncClient, sender: Sender, path: str
) -> None:
    response = await client.get(path, headers=sender.headers)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["message"] == NUL_REFUSED


@pytest.mark.parametrize(
    "path",
    [
        "/v1/messages/%ED%A0%80",
        "/v1/suppressions/%ED%A0%80@example.test",
        "/v1/events?message_id=%ED%A0%80&type=%ED%A0%80",
        "/v3/suppression/bounces?email=%ED%A0%80",
    ],
)
async def test_surrogates_in_the_url_arrive_replaced_and_answer(
    client: httpx.AsyncClient, sender: Sender, path: str
) -> None:
    """A URL is decoded as UTF-8 with replacement, so a surrogate never reaches a route."""
    response = await client.get(path, headers=sender.headers)
    assert response.status_code in (200, 400, 404), response.text
    response.json()
