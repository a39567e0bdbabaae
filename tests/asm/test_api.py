"""SendGrid's ASM API over HTTP: groups, their suppressions and the global list, with
SendGrid's fields, limits, status codes, scopes, and one account's groups hidden from others."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.accounts.scopes import Scope
from app.asm.service import MAX_GROUPS
from app.core.db import Database
from tests.fakes.dns import FakeDNS
from tests.support import Sender, make_key, make_sender


async def create(
    client: httpx.AsyncClient, sender: Sender, name: str, **fields: Any
) -> dict[str, Any]:
    """POST /v3/asm/groups; the 201 body."""
    body = {"name": name, "description": f"About {name}", **fields}
    response = await client.post("/v3/asm/groups", json=body, headers=sender.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def group(client: httpx.AsyncClient, sender: Sender, group_id: int) -> dict[str, Any]:
    """GET /v3/asm/groups/{id}."""
    response = await client.get(f"/v3/asm/groups/{group_id}", headers=sender.headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_create_get_list_update_delete(client: httpx.AsyncClient, sender: Sender) -> None:
    news = await create(client, sender, "Newsletters")
    assert news == {
        "id": news["id"],
        "name": "Newsletters",
        "description": "About Newsletters",
        "is_default": False,
    }
    promo = await create(client, sender, "Promotions", description="")
    assert await group(client, sender, news["id"]) == {**news, "unsubscribes": 0}
    listed = await client.get("/v3/asm/groups", headers=sender.headers)
    assert [g["name"] for g in listed.json()] == ["Newsletters", "Promotions"]
    only = await client.get(
        "/v3/asm/groups", params={"id": [promo["id"], 999_999]}, headers=sender.headers
    )
    assert [g["id"] for g in only.json()] == [promo["id"]]
    patched = await client.patch(
        f"/v3/asm/groups/{news['id']}",
        json={"id": 1, "name": "Weekly news", "description": "Once a week."},
        headers=sender.headers,
    )
    assert patched.status_code == 201  # SendGrid's status for a PATCH of a group
    assert patched.json() == {
        "id": news["id"],
        "name": "Weekly news",
        "description": "Once a week.",
        "is_default": False,
        "unsubscribes": 0,
    }
    deleted = await client.delete(f"/v3/asm/groups/{news['id']}", headers=sender.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/v3/asm/groups/{news['id']}", headers=sender.headers)
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["field"] == "group_id"


async def test_one_default_group_per_account(client: httpx.AsyncClient, sender: Sender) -> None:
    first = await create(client, sender, "First", is_default=True)
    second = await create(client, sender, "Second")
    assert first["is_default"] is True
    await client.patch(
        f"/v3/asm/groups/{second['id']}", json={"is_default": True}, headers=sender.headers
    )
    assert (await group(client, sender, first["id"]))["is_default"] is False
    assert (await group(client, sender, second["id"]))["is_default"] is True
    third = await create(client, sender, "Third", is_default=True)
    listed = (await client.get("/v3/asm/groups", headers=sender.headers)).json()
    assert [g["id"] for g in listed if g["is_default"]] == [third["id"]]
    await client.patch(
        f"/v3/asm/groups/{third['id']}", json={"is_default": False}, headers=sender.headers
    )
    listed = (await client.get("/v3/asm/groups", headers=sender.headers)).json()
    assert not any(g["is_default"] for g in listed)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": "no name"}, "name"),
        ({"name": "no description"}, "description"),
        ({"name": "x" * 31, "description": ""}, "name"),
        ({"name": "", "description": ""}, "name"),
        ({"name": "ok", "description": "x" * 101}, "description"),
        ({"name": "line\r\nbreak", "description": ""}, "name"),
        ({"name": "ok", "description": "", "is_default": "yes"}, "is_default"),
    ],
)
async def test_limits_of_a_group(
    client: httpx.AsyncClient, sender: Sender, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v3/asm/groups", json=body, headers=sender.headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


async def test_names_are_unique_and_groups_limited_to_200(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    await create(client, sender, "Alerts")
    twice = await client.post(
        "/v3/asm/groups", json={"name": "Alerts", "description": ""}, headers=sender.headers
    )
    assert twice.status_code == 400
    assert twice.json()["errors"][0] == {
        "message": "Another group with this name already exists",
        "field": "name",
        "help": None,
    }
    other = await create(client, sender, "Other")
    renamed = await client.patch(
        f"/v3/asm/groups/{other['id']}", json={"name": "Alerts"}, headers=sender.headers
    )
    assert renamed.status_code == 400
    assert (await group(client, sender, other["id"]))["name"] == "Other"
    for index in range(MAX_GROUPS - 4):
        await create(client, sender, f"Group {index}")
    # Six at once for the last two places: the count and the insert run under the account's
    # lock, so exactly two get in.
    bodies = [{"name": f"Last {i}", "description": ""} for i in range(6)]
    last = await asyncio.gather(
        *(client.post("/v3/asm/groups", json=b, headers=sender.headers) for b in bodies)
    )
    assert sorted(answer.status_code for answer in last) == [201, 201, 400, 400, 400, 400]
    over = await client.post(
        "/v3/asm/groups", json={"name": "One too many", "description": ""}, headers=sender.headers
    )
    assert over.status_code == 400
    assert "at most 200" in over.json()["errors"][0]["message"]


async def test_group_suppressions(client: httpx.AsyncClient, sender: Sender) -> None:
    news = await create(client, sender, "News")
    promo = await create(client, sender, "Promo")
    path = f"/v3/asm/groups/{news['id']}/suppressions"
    added = await client.post(
        path,
        json={"recipient_emails": ["Ann@Example.test", "bob@example.test", "ann@example.test"]},
        headers=sender.headers,
    )
    assert added.status_code == 201
    assert added.json() == {"recipient_emails": ["ann@example.test", "bob@example.test"]}
    await client.post(
        f"/v3/asm/groups/{promo['id']}/suppressions",
        json={"recipient_emails": ["ann@example.test"]},
        headers=sender.headers,
    )
    listed = await client.get(path, headers=sender.headers)
    assert listed.json() == ["ann@example.test", "bob@example.test"]
    assert (await group(client, sender, news["id"]))["unsubscribes"] == 2
    search = await client.post(
        path + "/search",
        json={"recipient_emails": ["BOB@example.test", "carl@example.test"]},
        headers=sender.headers,
    )
    assert search.status_code == 200
    assert search.json() == ["bob@example.test"]
    everything = (await client.get("/v3/asm/suppressions", headers=sender.headers)).json()
    assert [(e["email"], e["group_name"]) for e in everything] == [
        ("ann@example.test", "News"),
        ("ann@example.test", "Promo"),
        ("bob@example.test", "News"),
    ]
    assert all(isinstance(e["created_at"], int) for e in everything)
    of_bob = (
        await client.get("/v3/asm/suppressions/bob@example.test", headers=sender.headers)
    ).json()
    assert of_bob == {
        "suppressions": [
            {"description": "About News", "id": news["id"], "is_default": False,
             "name": "News", "suppressed": True},
            {"description": "About Promo", "id": promo["id"], "is_default": False,
             "name": "Promo", "suppressed": False},
        ]
    }  # fmt: skip
    removed = await client.delete(path + "/Bob@example.test", headers=sender.headers)
    assert removed.status_code == 204
    again = await client.delete(path + "/bob@example.test", headers=sender.headers)
    assert again.status_code == 404
    assert (await client.get(path, headers=sender.headers)).json() == ["ann@example.test"]
    await client.delete(f"/v3/asm/groups/{news['id']}", headers=sender.headers)
    left = (await client.get("/v3/asm/suppressions", headers=sender.headers)).json()
    assert [e["group_name"] for e in left] == ["Promo"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"recipient_emails": []},
        {"recipient_emails": ["not an address"]},
        {"recipient_emails": [f"u{i}@example.test" for i in range(1001)]},
    ],
)
async def test_suppression_bodies_are_checked(
    client: httpx.AsyncClient, sender: Sender, body: dict[str, Any]
) -> None:
    news = await create(client, sender, "News")
    for path in (
        f"/v3/asm/groups/{news['id']}/suppressions",
        f"/v3/asm/groups/{news['id']}/suppressions/search",
        "/v3/asm/suppressions/global",
    ):
        response = await client.post(path, json=body, headers=sender.headers)
        assert response.status_code == 400, path
        assert response.json()["errors"][0]["field"].startswith("recipient_emails"), path


async def test_global_suppressions_are_the_unsubscribe_list(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    added = await client.post(
        "/v3/asm/suppressions/global",
        json={"recipient_emails": ["Gone@example.test", "left@example.test"]},
        headers=sender.headers,
    )
    assert added.status_code == 201
    assert added.json() == {"recipient_emails": ["gone@example.test", "left@example.test"]}
    found = await client.get(
        "/v3/asm/suppressions/global/GONE@example.test", headers=sender.headers
    )
    assert found.json() == {"recipient_email": "gone@example.test"}
    absent = await client.get(
        "/v3/asm/suppressions/global/here@example.test", headers=sender.headers
    )
    assert (absent.status_code, absent.json()) == (200, {})
    # The same list SendGrid serves as /v3/suppression/unsubscribes.
    listed = await client.get("/v3/suppression/unsubscribes", headers=sender.headers)
    assert sorted(e["email"] for e in listed.json()) == ["gone@example.test", "left@example.test"]
    removed = await client.delete(
        "/v3/asm/suppressions/global/gone@example.test", headers=sender.headers
    )
    assert removed.status_code == 204
    again = await client.delete(
        "/v3/asm/suppressions/global/gone@example.test", headers=sender.headers
    )
    assert again.status_code == 404
    through_v3 = await client.delete(
        "/v3/suppression/unsubscribes/left@example.test", headers=sender.headers
    )
    assert through_v3.status_code == 204
    gone = await client.get("/v3/asm/suppressions/global/left@example.test", headers=sender.headers)
    assert gone.json() == {}


async def test_another_accounts_group_is_not_found(
    client: httpx.AsyncClient, sender: Sender, db: Database, dns_server: FakeDNS, settings: Any
) -> None:
    other = await make_sender(db, dns_server, settings, account="globex", domain="globex.test")
    theirs = await create(client, other, "Theirs")
    await client.post(
        f"/v3/asm/groups/{theirs['id']}/suppressions",
        json={"recipient_emails": ["x@example.test"]},
        headers=other.headers,
    )
    base = f"/v3/asm/groups/{theirs['id']}"
    body = {"recipient_emails": ["x@example.test"]}
    for method, path, json in (
        ("GET", base, None),
        ("PATCH", base, {"name": "Mine now"}),
        ("DELETE", base, None),
        ("GET", base + "/suppressions", None),
        ("POST", base + "/suppressions", body),
        ("POST", base + "/suppressions/search", body),
        ("DELETE", base + "/suppressions/x@example.test", None),
        ("GET", "/v3/asm/groups/not-a-number", None),
        ("GET", f"/v3/asm/groups/{2**70}", None),
    ):
        response = await client.request(method, path, json=json, headers=sender.headers)
        assert response.status_code == 404, (method, path)
    mine = await client.get("/v3/asm/groups", params={"id": theirs["id"]}, headers=sender.headers)
    assert mine.json() == []
    assert (await client.get("/v3/asm/suppressions", headers=sender.headers)).json() == []
    of_x = await client.get("/v3/asm/suppressions/x@example.test", headers=sender.headers)
    assert of_x.json() == {"suppressions": []}
    assert (await group(client, other, theirs["id"]))["unsubscribes"] == 1


SCOPED = [
    ("POST", "/v3/asm/groups", {"name": "n", "description": ""}, Scope.ASM_GROUPS_CREATE),
    ("GET", "/v3/asm/groups", None, Scope.ASM_GROUPS_READ),
    ("GET", "/v3/asm/groups/{id}", None, Scope.ASM_GROUPS_READ),
    ("PATCH", "/v3/asm/groups/{id}", {"name": "m"}, Scope.ASM_GROUPS_UPDATE),
    ("DELETE", "/v3/asm/groups/{id}", None, Scope.ASM_GROUPS_DELETE),
    ("POST", "/v3/asm/groups/{id}/suppressions", {"recipient_emails": ["a@example.test"]},
     Scope.ASM_GROUP_SUPPRESSIONS_CREATE),
    ("GET", "/v3/asm/groups/{id}/suppressions", None, Scope.ASM_GROUP_SUPPRESSIONS_READ),
    ("POST", "/v3/asm/groups/{id}/suppressions/search", {"recipient_emails": ["a@example.test"]},
     Scope.ASM_GROUP_SUPPRESSIONS_READ),
    ("DELETE", "/v3/asm/groups/{id}/suppressions/a@example.test", None,
     Scope.ASM_GROUP_SUPPRESSIONS_DELETE),
    ("GET", "/v3/asm/suppressions", None, Scope.ASM_GROUP_SUPPRESSIONS_READ),
    ("GET", "/v3/asm/suppressions/a@example.test", None, Scope.ASM_GROUP_SUPPRESSIONS_READ),
    ("POST", "/v3/asm/suppressions/global", {"recipient_emails": ["a@example.test"]},
     Scope.SUPPRESSION_CREATE),
    ("GET", "/v3/asm/suppressions/global/a@example.test", None, Scope.SUPPRESSION_READ),
    ("DELETE", "/v3/asm/suppressions/global/a@example.test", None, Scope.SUPPRESSION_DELETE),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "scope"), SCOPED)
async def test_each_route_needs_its_scope(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    scope: Scope,
) -> None:
    news = await create(client, sender, "News")
    await client.post(
        f"/v3/asm/groups/{news['id']}/suppressions",
        json={"recipient_emails": ["a@example.test"]},
        headers=sender.headers,
    )
    await client.post(
        "/v3/asm/suppressions/global",
        json={"recipient_emails": ["a@example.test"]},
        headers=sender.headers,
    )
    target = path.format(id=news["id"])
    others = [s.value for s in Scope if s is not scope]
    without = await make_key(db, account=sender.account_name, scopes=others)
    refused = await client.request(
        method, target, json=body, headers={"Authorization": f"Bearer {without}"}
    )
    assert refused.status_code == 403
    assert scope.value in refused.json()["errors"][0]["message"]
    only = await make_key(db, account=sender.account_name, scopes=[scope.value])
    allowed = await client.request(
        method, target, json=body, headers={"Authorization": f"Bearer {only}"}
    )
    assert allowed.status_code in (200, 201, 204), allowed.text
    anonymous = await client.request(method, target, json=body)
    assert anonymous.status_code == 401
