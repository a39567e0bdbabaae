"""The suppressions APIs: native list/add/lookup/delete and SendGrid's /v3/suppression."""

from __future__ import annotations

from typing import Any

import httpx

from app.core.db import Database
from app.suppressions import service as suppressions
from app.suppressions.models import SuppressionType
from tests.fakes.dns import FakeDNS
from tests.support import Sender, make_key, make_sender
from tests.test_end_to_end import send


async def add(client: httpx.AsyncClient, sender: Sender, *entries: dict[str, Any]) -> Any:
    """POST /v1/suppressions."""
    response = await client.post(
        "/v1/suppressions", json={"suppressions": list(entries)}, headers=sender.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["suppressions"]


async def test_adding_suppresses_at_once_and_deleting_allows_again(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    [entry] = await add(client, sender, {"email": "Stop@Example.test", "reason": "asked us"})
    assert entry["email"] == "stop@example.test"
    assert entry["type"] == "manual"
    accepted = await send(client, sender, to=["stop@example.test"])
    assert accepted["recipients"][0]["status"] == "dropped"
    response = await client.delete("/v1/suppressions/stop@example.test", headers=sender.headers)
    assert response.status_code == 204
    accepted = await send(client, sender, to=["stop@example.test"])
    assert accepted["recipients"][0]["status"] == "queued"
    again = await client.delete("/v1/suppressions/stop@example.test", headers=sender.headers)
    assert again.status_code == 404


async def test_list_lookup_and_pagination(client: httpx.AsyncClient, sender: Sender) -> None:
    await add(
        client,
        sender,
        *[{"email": f"user{i}@example.test", "type": "unsubscribe"} for i in range(5)],
        {"email": "user0@example.test", "type": "complaint", "reason": "ARF"},
    )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "type": "unsubscribe"}
        if cursor:
            params["after"] = cursor
        page = (await client.get("/v1/suppressions", params=params, headers=sender.headers)).json()
        seen.extend(s["email"] for s in page["suppressions"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"user{i}@example.test" for i in range(5)]
    found = (await client.get("/v1/suppressions/USER0@example.test", headers=sender.headers)).json()
    assert sorted(s["type"] for s in found) == ["complaint", "unsubscribe"]
    prefix = await client.get("/v1/suppressions", params={"email": "user1"}, headers=sender.headers)
    assert [s["email"] for s in prefix.json()["suppressions"]] == ["user1@example.test"]
    missing = await client.get("/v1/suppressions/none@example.test", headers=sender.headers)
    assert missing.status_code == 404
    only = await client.delete(
        "/v1/suppressions/user0@example.test?type=complaint", headers=sender.headers
    )
    assert only.status_code == 204
    left = (await client.get("/v1/suppressions/user0@example.test", headers=sender.headers)).json()
    assert [s["type"] for s in left] == ["unsubscribe"]


async def test_bad_input_is_refused_whole(client: httpx.AsyncClient, sender: Sender) -> None:
    response = await client.post(
        "/v1/suppressions",
        json={"suppressions": [{"email": "ok@example.test"}, {"email": "not an address"}]},
        headers=sender.headers,
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "suppressions.1.email"
    listed = (await client.get("/v1/suppressions", headers=sender.headers)).json()
    assert listed["suppressions"] == []
    wrong_type = await client.post(
        "/v1/suppressions",
        json={"suppressions": [{"email": "ok@example.test", "type": "forever"}]},
        headers=sender.headers,
    )
    assert wrong_type.status_code == 400


async def test_accounts_and_scopes_are_kept_apart(
    client: httpx.AsyncClient, sender: Sender, db: Database, dns_server: FakeDNS, settings: Any
) -> None:
    await add(client, sender, {"email": "mine@example.test"})
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    assert (
        await client.get("/v1/suppressions/mine@example.test", headers=other.headers)
    ).status_code == 404
    assert (
        await client.delete("/v1/suppressions/mine@example.test", headers=other.headers)
    ).status_code == 404
    assert (await send(client, other, to=["mine@example.test"]))["recipients"][0][
        "status"
    ] == "queued"
    reader = await make_key(db, account="acme", scopes=["suppression.read"])
    headers = {"Authorization": f"Bearer {reader}"}
    assert (await client.get("/v1/suppressions", headers=headers)).status_code == 200
    assert (
        await client.delete("/v1/suppressions/mine@example.test", headers=headers)
    ).status_code == 403
    denied = await client.post(
        "/v1/suppressions", json={"suppressions": [{"email": "x@example.test"}]}, headers=headers
    )
    assert denied.status_code == 403


async def _seed(db: Database, sender: Sender) -> None:
    """One entry of each kind, as bounces and reports would leave them."""
    entries = [
        ("hard@example.test", SuppressionType.BOUNCE, "550 5.1.1 user unknown", "5.1.1"),
        ("hard2@example.test", SuppressionType.BOUNCE, "550 5.1.1 user unknown", "5.1.1"),
        ("policy@example.test", SuppressionType.BLOCK, "554 5.7.1 listed", "5.7.1"),
        ("spam@example.test", SuppressionType.COMPLAINT, "abuse report", ""),
        ("nodomain@nowhere.test", SuppressionType.INVALID, "domain does not exist", "5.1.2"),
        ("left@example.test", SuppressionType.UNSUBSCRIBE, "", ""),
    ]
    async with db.session() as session:
        for email, kind, reason, status in entries:
            await suppressions.suppress(
                session,
                account_id=sender.account_id,
                email=email,
                type=kind,
                reason=reason,
                status=status,
            )
        await session.commit()


async def test_sendgrid_lists_have_sendgrids_shapes(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    await _seed(db, sender)

    async def listing(name: str, **params: Any) -> Any:
        """GET a /v3/suppression list."""
        response = await client.get(
            f"/v3/suppression/{name}", params=params, headers=sender.headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    bounces = await listing("bounces")
    assert sorted(b["email"] for b in bounces) == ["hard2@example.test", "hard@example.test"]
    assert set(bounces[0]) == {"created", "email", "reason", "status"}
    assert bounces[0]["status"] == "5.1.1"
    assert isinstance(bounces[0]["created"], int)
    [block] = await listing("blocks")
    assert block["email"] == "policy@example.test"
    assert block["status"] == "5.7.1"
    [spam] = await listing("spam_reports")
    assert set(spam) == {"created", "email", "ip"}
    [invalid] = await listing("invalid_emails")
    assert set(invalid) == {"created", "email", "reason"}
    [left] = await listing("unsubscribes")
    assert set(left) == {"created", "email"}
    assert [b["email"] for b in await listing("bounces", email="hard2")] == ["hard2@example.test"]
    assert len(await listing("bounces", limit=1)) == 1
    assert len(await listing("bounces", limit=1, offset=1)) == 1
    assert await listing("bounces", start_time=bounces[0]["created"] + 3600) == []
    one = await client.get("/v3/suppression/bounces/hard@example.test", headers=sender.headers)
    assert [b["email"] for b in one.json()] == ["hard@example.test"]


async def test_a_block_is_listed_but_does_not_suppress(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    await _seed(db, sender)
    accepted = await send(client, sender, to=["policy@example.test", "nodomain@nowhere.test"])
    assert [r["status"] for r in accepted["recipients"]] == ["queued", "dropped"]


async def test_sendgrid_deletes(client: httpx.AsyncClient, sender: Sender, db: Database) -> None:
    await _seed(db, sender)
    both = await client.request(
        "DELETE",
        "/v3/suppression/bounces",
        json={"delete_all": True, "emails": ["hard@example.test"]},
        headers=sender.headers,
    )
    assert both.status_code == 400
    some = await client.request(
        "DELETE",
        "/v3/suppression/bounces",
        json={"emails": ["hard@example.test"]},
        headers=sender.headers,
    )
    assert some.status_code == 204
    remaining = await client.get("/v3/suppression/bounces", headers=sender.headers)
    assert [b["email"] for b in remaining.json()] == ["hard2@example.test"]
    one = await client.delete(
        "/v3/suppression/spam_reports/spam@example.test", headers=sender.headers
    )
    assert one.status_code == 204
    gone = await client.delete(
        "/v3/suppression/spam_reports/spam@example.test", headers=sender.headers
    )
    assert gone.status_code == 404
    everything = await client.request(
        "DELETE", "/v3/suppression/bounces", json={"delete_all": True}, headers=sender.headers
    )
    assert everything.status_code == 204
    assert (await client.get("/v3/suppression/bounces", headers=sender.headers)).json() == []
    # Other lists are untouched.
    assert len((await client.get("/v3/suppression/blocks", headers=sender.headers)).json()) == 1
