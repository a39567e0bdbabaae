"""The official `sendgrid` client, unchanged, for every ASM call and for a send with a group:
a team moving from SendGrid keeps its unsubscribe management code as it is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import BadRequestsError, ForbiddenError, NotFoundError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Asm, GroupId, GroupsToDisplay, Mail, To

from app.accounts.scopes import Scope
from app.core.db import Database
from tests.fakes.mx import ScriptedMX
from tests.support import ApiServer, Sender, make_key
from tests.test_end_to_end import Deliver, message_view


async def call(request: Callable[..., Any], **options: Any) -> tuple[int, Any]:
    """Run one synchronous client call in a thread (the loop keeps serving the API); the
    status and the decoded body (None when empty)."""
    response = await asyncio.to_thread(request, **options)
    body = json.loads(response.body) if response.body else None
    return response.status_code, body


@pytest.fixture
def sg(api: ApiServer, sender: Sender) -> SendGridAPIClient:
    """The official client pointed at Columba."""
    return SendGridAPIClient(sender.key, host=api.url)


async def test_groups_with_the_official_client(sg: SendGridAPIClient) -> None:
    groups = sg.client.asm.groups
    status, news = await call(
        groups.post,
        request_body={"name": "Newsletters", "description": "Monthly news", "is_default": True},
    )
    assert status == 201
    assert news["is_default"] is True
    status, promo = await call(
        groups.post, request_body={"name": "Promotions", "description": "Deals"}
    )
    assert status == 201
    status, listed = await call(groups.get)
    assert status == 200
    assert [(g["name"], g["unsubscribes"]) for g in listed] == [
        ("Newsletters", 0),
        ("Promotions", 0),
    ]
    status, only = await call(groups.get, query_params={"id": [promo["id"]]})
    assert [g["id"] for g in only] == [promo["id"]]
    status, patched = await call(
        groups._(promo["id"]).patch, request_body={"name": "Deals", "is_default": True}
    )
    assert (status, patched["name"], patched["is_default"]) == (201, "Deals", True)
    status, first = await call(groups._(news["id"]).get)
    assert (status, first["is_default"]) == (200, False)
    status, _ = await call(groups._(news["id"]).delete)
    assert status == 204
    with pytest.raises(NotFoundError):
        await call(groups._(news["id"]).get)
    with pytest.raises(BadRequestsError) as refused:
        await call(groups.post, request_body={"name": "x" * 31, "description": ""})
    assert json.loads(refused.value.body)["errors"][0]["field"] == "name"


async def test_suppressions_with_the_official_client(sg: SendGridAPIClient) -> None:
    status, news = await call(
        sg.client.asm.groups.post, request_body={"name": "News", "description": ""}
    )
    group = sg.client.asm.groups._(news["id"])
    emails = {"recipient_emails": ["a@example.test", "b@example.test"]}
    status, added = await call(group.suppressions.post, request_body=emails)
    assert (status, added) == (201, emails)
    status, listed = await call(group.suppressions.get)
    assert status == 200
    assert listed == ["a@example.test", "b@example.test"]
    status, found = await call(
        group.suppressions.search.post,
        request_body={"recipient_emails": ["b@example.test", "c@example.test"]},
    )
    assert found == ["b@example.test"]
    status, everything = await call(sg.client.asm.suppressions.get)
    assert [(e["email"], e["group_id"], e["group_name"]) for e in everything] == [
        ("a@example.test", news["id"], "News"),
        ("b@example.test", news["id"], "News"),
    ]
    status, of_a = await call(sg.client.asm.suppressions._("a@example.test").get)
    assert of_a["suppressions"][0]["suppressed"] is True
    status, _ = await call(group.suppressions._("a@example.test").delete)
    assert status == 204
    status, of_a = await call(sg.client.asm.suppressions._("a@example.test").get)
    assert of_a["suppressions"][0]["suppressed"] is False

    # `global` is a Python keyword: the client's documented way is `_("global")`.
    global_list = sg.client.asm.suppressions._("global")
    status, added = await call(
        global_list.post, request_body={"recipient_emails": ["gone@example.test"]}
    )
    assert (status, added) == (201, {"recipient_emails": ["gone@example.test"]})
    status, found = await call(global_list._("gone@example.test").get)
    assert found == {"recipient_email": "gone@example.test"}
    status, unsubscribes = await call(sg.client.suppression.unsubscribes.get)
    assert [e["email"] for e in unsubscribes] == ["gone@example.test"]
    status, _ = await call(global_list._("gone@example.test").delete)
    assert status == 204
    status, found = await call(global_list._("gone@example.test").get)
    assert (status, found) == (200, {})


async def test_a_key_without_the_scope_is_forbidden(
    api: ApiServer, sender: Sender, db: Database
) -> None:
    key = await make_key(db, account=sender.account_name, scopes=[Scope.ASM_GROUPS_READ.value])
    reader = SendGridAPIClient(key, host=api.url)
    status, listed = await call(reader.client.asm.groups.get)
    assert (status, listed) == (200, [])
    with pytest.raises(ForbiddenError):
        await call(reader.client.asm.groups.post, request_body={"name": "n", "description": ""})


async def test_a_send_with_a_group_through_the_official_client(
    sg: SendGridAPIClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    client: httpx.AsyncClient,
) -> None:
    status, news = await call(
        sg.client.asm.groups.post, request_body={"name": "News", "description": ""}
    )
    assert status == 201
    await call(
        sg.client.asm.groups._(news["id"]).suppressions.post,
        request_body={"recipient_emails": ["left@example.test"]},
    )
    mail = Mail(
        from_email=sender.address(),
        to_emails=[To("left@example.test"), To("stays@example.test")],
        subject="This week",
        plain_text_content="News.",
        is_multiple=True,
    )
    mail.asm = Asm(GroupId(news["id"]), GroupsToDisplay([news["id"]]))
    response = await asyncio.to_thread(sg.send, mail)
    assert response.status_code == 202
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.rcpt_tos == ["stays@example.test"]
    view = await message_view(client, sender, response.headers["X-Message-Id"])
    assert {r["email"]: r["status"] for r in view["recipients"]} == {
        "left@example.test": "dropped",
        "stays@example.test": "delivered",
    }
    mail.asm = Asm(GroupId(news["id"] + 1000))
    with pytest.raises(BadRequestsError) as refused:
        await asyncio.to_thread(sg.send, mail)
    assert json.loads(refused.value.body)["errors"][0]["field"] == "asm.group_id"
