"""/v1/templates: versions with one active, refused when they do not compile, per account."""

from __future__ import annotations

import email
import email.policy
from typing import Any

import httpx

from app.core.db import Database
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_key
from tests.test_end_to_end import Deliver, message_view, send

VERSION = {
    "name": "v1",
    "subject": "Hi {{ name }}",
    "html": "<p>{{ name }}</p>",
    "text": "{{ name }}",
}


async def create(client: httpx.AsyncClient, sender: Sender, **body: Any) -> dict[str, Any]:
    """POST /v1/templates; returns the 201 body."""
    response = await client.post("/v1/templates", headers=sender.headers, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_create_version_activate_and_send(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    template = await create(client, sender, name="welcome", version=VERSION)
    assert template["id"].startswith("d-")
    assert len(template["id"]) == 34
    assert template["engine"] == "jinja"
    [first] = template["versions"]
    assert first["active"] is True  # the first version is active, as in SendGrid
    second = await client.post(
        f"/v1/templates/{template['id']}/versions",
        headers=sender.headers,
        json={**VERSION, "name": "v2", "subject": "Welcome, {{ name }}", "active": True},
    )
    assert second.status_code == 201
    again = (await client.get(f"/v1/templates/{template['id']}", headers=sender.headers)).json()
    assert [v["active"] for v in again["versions"]] == [False, True]
    await send(
        client,
        sender,
        subject=None,
        text=None,
        template_id=template["id"],
        recipients=[{"to": "ann@example.test", "template_data": {"name": "Ann"}}],
    )
    await deliver()
    [received] = await mx.wait_for(1)
    assert b"Subject: Welcome, Ann" in received.data


async def test_a_template_edited_after_a_send_does_not_change_that_send(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    template = await create(client, sender, name="t", version=VERSION)
    version_id = template["versions"][0]["id"]
    await send(
        client, sender, subject=None, text=None, template_id=template["id"], to=["a@example.test"]
    )
    edit = await client.patch(
        f"/v1/templates/{template['id']}/versions/{version_id}",
        headers=sender.headers,
        json={"subject": "Changed"},
    )
    assert edit.status_code == 200
    assert edit.json()["subject"] == "Changed"
    await deliver()
    [received] = await mx.wait_for(1)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"].strip() == "Hi"  # the version as it was when the send was accepted


async def test_a_version_that_does_not_compile_is_refused_with_the_line(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    response = await client.post(
        "/v1/templates",
        headers=sender.headers,
        json={"name": "bad", "version": {**VERSION, "html": "<p>\n{% if %}</p>"}},
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "html"
    assert "line 2" in error["message"]
    listed = await client.get("/v1/templates", headers=sender.headers)
    assert listed.json() == []  # nothing half-written
    handlebars = await client.post(
        "/v1/templates",
        headers=sender.headers,
        json={"name": "hb", "engine": "handlebars", "version": {**VERSION, "subject": "{{#if x}}"}},
    )
    assert handlebars.status_code == 400
    assert handlebars.json()["errors"][0]["field"] == "subject"


def doublings(count: int) -> str:
    """The audit's template: a string doubled `count` times in set statements."""
    steps = "".join(f"{{% set s{i + 1} = s{i} ~ s{i} %}}" for i in range(count))
    return "{% set s0 = 'aaaaaaaa' %}" + steps + f"{{{{ s{count}|length }}}}"


async def test_a_version_that_cannot_render_within_the_limits_is_refused(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    hostile = {**VERSION, "text": doublings(40)}
    response = await client.post(
        "/v1/templates", headers=sender.headers, json={"name": "bomb", "version": hostile}
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "text"
    assert "cannot be rendered within the limits" in error["message"]
    assert (await client.get("/v1/templates", headers=sender.headers)).json() == []
    template = await create(client, sender, name="fine", version=VERSION)
    versions = f"/v1/templates/{template['id']}/versions"
    added = await client.post(versions, headers=sender.headers, json={**hostile, "name": "v2"})
    assert added.status_code == 400
    assert added.json()["errors"][0]["field"] == "text"
    edited = await client.patch(
        f"{versions}/{template['versions'][0]['id']}",
        headers=sender.headers,
        json={"html": "<p>" + doublings(40) + "</p>"},
    )
    assert edited.status_code == 400
    assert edited.json()["errors"][0]["field"] == "html"
    handlebars = await client.post(
        "/v1/templates",
        headers=sender.headers,
        json={
            "name": "hb",
            "engine": "handlebars",
            "version": {**VERSION, "html": "{{#unless x}}" * 120 + "{{/unless}}" * 120},
        },
    )
    assert handlebars.status_code == 400
    assert handlebars.json()["errors"][0]["field"] == "html"
    again = await client.get(f"/v1/templates/{template['id']}", headers=sender.headers)
    assert [(v["name"], v["html"]) for v in again.json()["versions"]] == [("v1", VERSION["html"])]


async def test_versions_that_fail_or_grow_only_with_data_are_kept(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    version = {
        **VERSION,
        "text": "Each: {{ total / count }}",  # fails with no data, renders with a send's
        "html": "{% for row in rows %}{{ row ~ row }}{% endfor %}",  # size set by the data
    }
    response = await client.post(
        "/v1/templates", headers=sender.headers, json={"name": "data", "version": version}
    )
    assert response.status_code == 201, response.text


async def test_templates_of_another_account_are_404(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    template = await create(client, sender, name="mine", version=VERSION)
    stranger = {"Authorization": f"Bearer {await make_key(db, account='other', scopes=None)}"}
    for method, path in [
        ("GET", f"/v1/templates/{template['id']}"),
        ("PATCH", f"/v1/templates/{template['id']}"),
        ("DELETE", f"/v1/templates/{template['id']}"),
        ("GET", f"/v1/templates/{template['id']}/versions/{template['versions'][0]['id']}"),
    ]:
        response = await client.request(method, path, headers=stranger, json={"name": "x"})
        assert response.status_code == 404, (method, path)
    response = await client.post(
        "/v1/send",
        headers=stranger,
        json={"from": sender.address(), "to": ["a@example.test"], "template_id": template["id"]},
    )
    assert response.status_code in (400, 403)


async def test_rename_delete_and_scopes(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    template = await create(client, sender, name="old")
    renamed = await client.patch(
        f"/v1/templates/{template['id']}", headers=sender.headers, json={"name": "new"}
    )
    assert renamed.json()["name"] == "new"
    reader = {
        "Authorization": f"Bearer {await make_key(db, account='acme', scopes=['templates.read'])}"
    }
    assert (await client.get("/v1/templates", headers=reader)).status_code == 200
    assert (
        await client.post("/v1/templates", headers=reader, json={"name": "x"})
    ).status_code == 403
    deleted = await client.delete(f"/v1/templates/{template['id']}", headers=sender.headers)
    assert deleted.status_code == 204
    missing = await client.get(f"/v1/templates/{template['id']}", headers=sender.headers)
    assert missing.status_code == 404


async def test_sending_with_a_template_without_an_active_version_is_400(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    template = await create(client, sender, name="empty")
    response = await client.post(
        "/v1/send",
        headers=sender.headers,
        json={"from": sender.address(), "to": ["a@example.test"], "template_id": template["id"]},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "template_id"


async def test_message_view_shows_the_template(client: httpx.AsyncClient, sender: Sender) -> None:
    template = await create(client, sender, name="t", version=VERSION)
    accepted = await send(
        client, sender, subject=None, text=None, template_id=template["id"], to=["a@example.test"]
    )
    view = await message_view(client, sender, accepted["id"])
    assert view["recipients"][0]["events"][0]["data"]["template_id"] == template["id"]
