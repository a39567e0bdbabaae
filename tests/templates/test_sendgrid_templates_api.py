"""SendGrid's `/v3/templates` driven by the official `sendgrid` client, unchanged: every call
of the Templates API, SendGrid's shapes and names, over the same store as `/v1/templates`."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import BadRequestsError, ForbiddenError, NotFoundError
from sendgrid import SendGridAPIClient

from app.core.db import Database
from app.templates.models import Template
from tests.support import ApiServer, Sender, make_key

SENDGRID_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
VERSION = {
    "name": "v1",
    "subject": "Hi {{name}}",
    "html_content": "<p>Hello <b>{{name}}</b></p><p><a href='{{url}}'>Shop</a></p>",
    "active": 1,
    "editor": "code",
}


@pytest.fixture
def sg(api: ApiServer, sender: Sender) -> SendGridAPIClient:
    """The official client pointed at Columba, as a migrating team would configure it."""
    return SendGridAPIClient(sender.key, host=api.url)


async def call(request: Callable[..., Any], **kwargs: Any) -> tuple[int, Any]:
    """Run one synchronous client call in a thread; its status and decoded body."""
    response = await asyncio.to_thread(request, **kwargs)
    body = json.loads(response.body) if response.body else None
    return response.status_code, body


async def dynamic_template(sg: SendGridAPIClient, name: str = "welcome") -> dict[str, Any]:
    """A new dynamic template."""
    status, body = await call(
        sg.client.templates.post, request_body={"name": name, "generation": "dynamic"}
    )
    assert status == 201
    result: dict[str, Any] = body
    return result


async def test_create_a_dynamic_template_and_its_first_version(sg: SendGridAPIClient) -> None:
    template = await dynamic_template(sg)
    assert template["id"].startswith("d-")
    assert template["generation"] == "dynamic"
    assert template["versions"] == []
    assert SENDGRID_TIME.match(template["updated_at"])
    versions = sg.client.templates._(template["id"]).versions
    status, version = await call(versions.post, request_body=VERSION)
    assert status == 201
    assert version["template_id"] == template["id"]
    assert version["active"] == 1
    assert version["html_content"] == VERSION["html_content"]
    # generate_plain_content is true by default: the text is made from the html.
    assert version["generate_plain_content"] is True
    assert version["plain_content"] == "Hello {{name}}\n\nShop ({{url}})"
    assert version["editor"] == "code"
    assert SENDGRID_TIME.match(version["updated_at"])
    status, again = await call(sg.client.templates._(template["id"]).get)
    assert status == 200
    assert [v["id"] for v in again["versions"]] == [version["id"]]


async def test_legacy_is_the_default_generation(sg: SendGridAPIClient) -> None:
    status, template = await call(sg.client.templates.post, request_body={"name": "old"})
    assert status == 201
    assert template["generation"] == "legacy"
    assert re.fullmatch(r"[0-9a-f-]{36}", template["id"])  # a UUID, not a d- id


async def test_a_second_version_activated_and_the_first_deactivated(sg: SendGridAPIClient) -> None:
    template = await dynamic_template(sg)
    versions = sg.client.templates._(template["id"]).versions
    _, first = await call(versions.post, request_body=VERSION)
    _, second = await call(versions.post, request_body={**VERSION, "name": "v2", "active": 0})
    assert second["active"] == 0
    status, activated = await call(versions._(second["id"]).activate.post)
    assert status == 200
    assert activated["active"] == 1
    _, reread = await call(versions._(first["id"]).get)
    assert reread["active"] == 0


async def test_edit_a_version_with_sendgrid_field_names(sg: SendGridAPIClient) -> None:
    template = await dynamic_template(sg)
    versions = sg.client.templates._(template["id"]).versions
    _, version = await call(versions.post, request_body=VERSION)
    status, edited = await call(
        versions._(version["id"]).patch,
        request_body={
            "plain_content": "Hi {{name}}, by hand",
            "generate_plain_content": False,
            "subject": "Welcome {{name}}",
            "test_data": '{"name": "Ann"}',
        },
    )
    assert status == 200
    assert edited["plain_content"] == "Hi {{name}}, by hand"
    assert edited["generate_plain_content"] is False
    assert edited["subject"] == "Welcome {{name}}"
    assert edited["test_data"] == '{"name": "Ann"}'
    status, regenerated = await call(
        versions._(version["id"]).patch,
        request_body={"html_content": "<p>New {{name}}</p>", "generate_plain_content": True},
    )
    assert status == 200
    assert regenerated["plain_content"] == "New {{name}}"


async def test_delete_a_version_and_a_template(sg: SendGridAPIClient) -> None:
    template = await dynamic_template(sg)
    versions = sg.client.templates._(template["id"]).versions
    _, version = await call(versions.post, request_body=VERSION)
    assert (await call(versions._(version["id"]).delete))[0] == 204
    with pytest.raises(NotFoundError):
        await call(versions._(version["id"]).get)
    assert (await call(sg.client.templates._(template["id"]).delete))[0] == 204
    with pytest.raises(NotFoundError):
        await call(sg.client.templates._(template["id"]).get)


async def test_rename_and_duplicate_a_template(sg: SendGridAPIClient) -> None:
    template = await dynamic_template(sg)
    await call(sg.client.templates._(template["id"]).versions.post, request_body=VERSION)
    status, renamed = await call(
        sg.client.templates._(template["id"]).patch, request_body={"name": "renamed"}
    )
    assert status == 200
    assert renamed["name"] == "renamed"
    status, copy = await call(
        sg.client.templates._(template["id"]).post, request_body={"name": "copy"}
    )
    assert status == 201
    assert copy["id"] != template["id"]
    assert copy["name"] == "copy"
    assert [(v["name"], v["active"]) for v in copy["versions"]] == [("v1", 1)]


async def test_list_pages_through_the_generations_asked_for(sg: SendGridAPIClient) -> None:
    made = [(await dynamic_template(sg, f"d{n}"))["id"] for n in range(3)]
    await call(sg.client.templates.post, request_body={"name": "legacy"})
    status, page = await call(
        sg.client.templates.get, query_params={"generations": "dynamic", "page_size": 2}
    )
    assert status == 200
    assert [t["id"] for t in page["result"]] == made[:2]
    assert page["_metadata"]["count"] == 3
    assert "prev" not in page["_metadata"]
    token = httpx.URL(page["_metadata"]["next"]).params["page_token"]
    _, rest = await call(
        sg.client.templates.get,
        query_params={"generations": "dynamic", "page_size": 2, "page_token": token},
    )
    assert [t["id"] for t in rest["result"]] == made[2:]
    assert "next" not in rest["_metadata"]
    assert "prev" in rest["_metadata"]
    _, both = await call(
        sg.client.templates.get, query_params={"generations": "legacy,dynamic", "page_size": 10}
    )
    assert {t["generation"] for t in both["result"]} == {"legacy", "dynamic"}


async def test_list_without_page_size_answers_sendgrids_older_shape(
    sg: SendGridAPIClient,
) -> None:
    await dynamic_template(sg)
    _, legacy = await call(sg.client.templates.post, request_body={"name": "old"})
    status, listed = await call(sg.client.templates.get)  # generations: legacy by default
    assert status == 200
    assert [t["id"] for t in listed["templates"]] == [legacy["id"]]


async def test_page_size_out_of_range_is_refused(sg: SendGridAPIClient) -> None:
    with pytest.raises(BadRequestsError) as raised:
        await call(sg.client.templates.get, query_params={"page_size": 201})
    assert json.loads(raised.value.body)["errors"][0]["field"] == "page_size"


async def test_a_helper_sendgrid_does_not_have_is_refused_in_its_words(
    sg: SendGridAPIClient,
) -> None:
    template = await dynamic_template(sg)
    body = {**VERSION, "html_content": '<p>{{formatDat when "MM/DD/YYYY"}}</p>'}
    with pytest.raises(BadRequestsError) as raised:
        await call(sg.client.templates._(template["id"]).versions.post, request_body=body)
    errors = json.loads(raised.value.body)["errors"]
    # the html and the text made from it both call it
    assert [e["field"] for e in errors] == ["html_content", "plain_content"]
    assert all("unknown helper formatDat" in e["message"] for e in errors)


async def test_a_version_without_content_is_refused(sg: SendGridAPIClient) -> None:
    template = await dynamic_template(sg)
    with pytest.raises(BadRequestsError):
        await call(
            sg.client.templates._(template["id"]).versions.post,
            request_body={"name": "empty", "subject": "s"},
        )


async def test_v3_templates_are_the_v1_templates(
    sg: SendGridAPIClient, client: httpx.AsyncClient, sender: Sender
) -> None:
    template = await dynamic_template(sg)
    await call(sg.client.templates._(template["id"]).versions.post, request_body=VERSION)
    v1 = (await client.get(f"/v1/templates/{template['id']}", headers=sender.headers)).json()
    assert v1["engine"] == "handlebars"
    assert v1["versions"][0]["html"] == VERSION["html_content"]


async def test_scopes_are_sendgrids(api: ApiServer, db: Database, sender: Sender) -> None:
    key = await make_key(db, account="acme", scopes=["templates.read", "templates.create"])
    scoped = SendGridAPIClient(key, host=api.url)
    template = await dynamic_template(scoped)
    with pytest.raises(ForbiddenError):  # templates.versions.create is another scope
        await call(scoped.client.templates._(template["id"]).versions.post, request_body=VERSION)
    with pytest.raises(ForbiddenError):
        await call(scoped.client.templates._(template["id"]).delete)


async def test_another_accounts_template_is_not_found(
    sg: SendGridAPIClient, api: ApiServer, db: Database
) -> None:
    template = await dynamic_template(sg)
    other = SendGridAPIClient(await make_key(db, account="other", scopes=None), host=api.url)
    with pytest.raises(NotFoundError):
        await call(other.client.templates._(template["id"]).get)


async def test_an_account_has_at_most_300_templates(
    sg: SendGridAPIClient, db: Database, sender: Sender
) -> None:
    async with db.session() as session:
        session.add_all(
            Template(account_id=sender.account_id, name=f"t{n}", engine="handlebars")
            for n in range(300)
        )
        await session.commit()
    with pytest.raises(BadRequestsError) as raised:
        await dynamic_template(sg, "one too many")
    assert "up to 300 templates" in json.loads(raised.value.body)["errors"][0]["message"]
