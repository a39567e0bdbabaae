"""API keys over HTTP with the official `sendgrid` client (`/v3/api_keys`, `/v3/scopes`) and
natively (`/v1/keys`): the secret is shown once, a key grants only what it holds, and a
revoked key stops working at once, announced to every API process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import (
    BadRequestsError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from sendgrid import SendGridAPIClient

from app.accounts import service as accounts
from app.accounts.scopes import Scope
from app.core import signals
from app.core.db import Database
from tests.support import ApiServer, Sender, make_key


async def call(request: Callable[..., Any], **kwargs: Any) -> Any:
    """Run one synchronous client call in a thread while the loop serves the API."""
    return await asyncio.to_thread(request, **kwargs)


def body(response: Any) -> Any:
    """The JSON body of a client response."""
    return json.loads(response.body)


def client_for(api: ApiServer, key: str) -> SendGridAPIClient:
    """The official client with `key`, pointed at Columba."""
    return SendGridAPIClient(key, host=api.url)


async def test_create_list_get_rename_replace_and_delete(api: ApiServer, sender: Sender) -> None:
    sg = client_for(api, sender.key)
    created = await call(
        sg.client.api_keys.post, request_body={"name": "Mail", "scopes": ["mail.send"]}
    )
    assert created.status_code == 201
    fresh = body(created)
    assert fresh["name"] == "Mail"
    assert fresh["scopes"] == ["mail.send"]
    assert fresh["api_key"].startswith(f"SG.{fresh['api_key_id']}.")
    key_id = fresh["api_key_id"]

    listed = body(await call(sg.client.api_keys.get))
    assert {"api_key_id": key_id, "name": "Mail"} in listed["result"]
    assert all("api_key" not in item and "scopes" not in item for item in listed["result"])
    one = body(await call(sg.client.api_keys._(key_id).get))
    assert one == {"result": [{"api_key_id": key_id, "name": "Mail", "scopes": ["mail.send"]}]}

    renamed = await call(sg.client.api_keys._(key_id).patch, request_body={"name": "Orders"})
    assert body(renamed) == {"api_key_id": key_id, "name": "Orders"}
    replaced = await call(
        sg.client.api_keys._(key_id).put,
        request_body={"name": "Orders", "scopes": ["mail.send", "stats.read"]},
    )
    assert body(replaced)["scopes"] == ["mail.send", "stats.read"]
    scopes = body(await call(client_for(api, fresh["api_key"]).client.scopes.get))
    assert scopes == {"scopes": ["mail.send", "stats.read"]}

    deleted = await call(sg.client.api_keys._(key_id).delete)
    assert deleted.status_code == 204
    with pytest.raises(NotFoundError):
        await call(sg.client.api_keys._(key_id).get)
    with pytest.raises(UnauthorizedError):
        await call(client_for(api, fresh["api_key"]).client.scopes.get)


async def test_the_secret_is_shown_only_by_create(
    api: ApiServer, sender: Sender, client: httpx.AsyncClient
) -> None:
    sg = client_for(api, sender.key)
    secret = body(await call(sg.client.api_keys.post, request_body={"name": "Once"}))["api_key"]
    key_id = secret.split(".")[1]
    later = [
        (await call(sg.client.api_keys.get)).body,
        (await call(sg.client.api_keys._(key_id).get)).body,
        (await call(sg.client.api_keys._(key_id).patch, request_body={"name": "Twice"})).body,
    ]
    for answer in later:
        assert secret.split(".")[2].encode() not in answer
    native = await client.get("/v1/keys", headers=sender.headers)
    assert secret.split(".")[2] not in native.text


async def test_a_full_access_key_gets_every_scope_listed(api: ApiServer, sender: Sender) -> None:
    scopes = body(await call(client_for(api, sender.key).client.scopes.get))["scopes"]
    assert scopes == sorted(scope.value for scope in Scope)
    created = await call(
        client_for(api, sender.key).client.api_keys.post, request_body={"name": "All"}
    )
    assert body(created)["scopes"] == scopes


async def test_a_key_cannot_grant_scopes_it_lacks(
    api: ApiServer, sender: Sender, db: Database
) -> None:
    held = ["api_keys.create", "api_keys.update", "mail.send"]
    scoped = await make_key(db, account=sender.account_name, scopes=held)
    sg = client_for(api, scoped)
    with pytest.raises(ForbiddenError) as refused:
        await call(sg.client.api_keys.post, request_body={"name": "x", "scopes": ["stats.read"]})
    [error] = json.loads(refused.value.body)["errors"]
    assert error["field"] == "scopes"
    assert "stats.read" in error["message"]
    with pytest.raises(ForbiddenError):  # no scopes: full access, more than it holds
        await call(sg.client.api_keys.post, request_body={"name": "x"})

    smaller = body(
        await call(sg.client.api_keys.post, request_body={"name": "s", "scopes": ["mail.send"]})
    )
    assert smaller["scopes"] == ["mail.send"]
    with pytest.raises(ForbiddenError):  # nor by widening an existing key
        await call(
            sg.client.api_keys._(smaller["api_key_id"]).put,
            request_body={"name": "s", "scopes": ["mail.send", "suppression.read"]},
        )
    with pytest.raises(BadRequestsError):
        await call(sg.client.api_keys.post, request_body={"name": "x", "scopes": ["no.such"]})
    with pytest.raises(ForbiddenError):  # listing needs api_keys.read
        await call(sg.client.api_keys.get)


async def test_another_accounts_key_is_not_found(
    api: ApiServer, sender: Sender, db: Database
) -> None:
    other = await make_key(db, account="someone-else", scopes=None)
    other_id = other.split(".")[1]
    sg = client_for(api, sender.key)
    for request in (sg.client.api_keys._(other_id).get, sg.client.api_keys._(other_id).delete):
        with pytest.raises(NotFoundError):
            await call(request)
    assert (await call(client_for(api, other).client.scopes.get)).status_code == 200


async def next_message(pubsub: PubSub) -> dict[str, Any] | None:
    """The next published message (subscription confirmations are skipped), within 5 s."""
    for _ in range(50):
        message: dict[str, Any] | None = await pubsub.get_message(
            ignore_subscribe_messages=True, timeout=0.1
        )
        if message is not None:
            return message
    return None


async def test_a_revocation_is_announced_to_every_api_process(
    api: ApiServer, sender: Sender, db: Database
) -> None:
    victim = await make_key(db, account=sender.account_name, scopes=["mail.send"])
    prefix = victim.split(".")[1]
    assert (await call(client_for(api, victim).client.scopes.get)).status_code == 200  # cached
    redis = Redis.from_url(api.app.state.queue.redis_url)
    async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(signals.INVALIDATE_CHANNEL)
        deleted = await call(client_for(api, sender.key).client.api_keys._(prefix).delete)
        assert deleted.status_code == 204
        heard = await next_message(pubsub)
    await redis.aclose()
    assert heard is not None
    assert signals.decode(heard["data"]) == (signals.KEY, prefix)
    with pytest.raises(UnauthorizedError):  # this process: at once, not after the TTL
        await call(client_for(api, victim).client.scopes.get)


async def test_native_keys(client: httpx.AsyncClient, sender: Sender) -> None:
    created = await client.post(
        "/v1/keys", json={"name": "shop", "scopes": ["mail.send"]}, headers=sender.headers
    )
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith(f"SG.{key['id']}.")
    assert key["scopes"] == ["mail.send"]
    headers = sender.headers
    listed = (await client.get("/v1/keys", headers=headers)).json()["keys"]
    assert [k["id"] for k in listed][-1] == key["id"]
    assert "key" not in listed[-1]
    changed = await client.patch(
        f"/v1/keys/{key['id']}", json={"name": "shop2", "scopes": None}, headers=headers
    )
    assert changed.json()["name"] == "shop2"
    assert changed.json()["scopes"] is None
    fetched = await client.get(f"/v1/keys/{key['id']}", headers=headers)
    assert fetched.json()["scopes"] is None
    mine = {"Authorization": f"Bearer {key['key']}"}
    assert (await client.get("/v1/keys", headers=mine)).status_code == 200  # full access now
    assert (await client.delete(f"/v1/keys/{key['id']}", headers=headers)).status_code == 204
    assert (await client.get("/v1/keys", headers=mine)).status_code == 401
    assert (await client.get(f"/v1/keys/{key['id']}", headers=headers)).status_code == 404


async def test_an_account_has_at_most_100_keys(
    api: ApiServer, sender: Sender, db: Database
) -> None:
    for _ in range(accounts.MAX_KEYS - 1):  # the sender's key is the first
        await make_key(db, account=sender.account_name, scopes=["mail.send"])
    sg = client_for(api, sender.key)
    with pytest.raises(ForbiddenError) as refused:
        await call(sg.client.api_keys.post, request_body={"name": "one too many"})
    assert (
        "maximum number of API keys (100)" in json.loads(refused.value.body)["errors"][0]["message"]
    )
    last = body(await call(sg.client.api_keys.get, query_params={"limit": 1000}))["result"][-1]
    await call(sg.client.api_keys._(last["api_key_id"]).delete)  # a revoked key does not count
    assert (await call(sg.client.api_keys.post, request_body={"name": "room"})).status_code == 201
