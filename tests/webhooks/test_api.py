"""The webhooks API: CRUD, secrets, filters, SendGrid's format, replay, SSRF refusal."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import trustme
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook as StandardWebhook

from app.core.config import Settings
from app.core.db import Database
from app.events import service as events
from app.webhooks.dispatcher import Dispatcher, build_dispatcher
from app.webhooks.models import Webhook, WebhookOutbox
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.fakes.webhooks import WebhookReceiver, running_receiver
from tests.support import ApiServer, Sender, make_sender
from tests.test_end_to_end import Deliver, send
from tests.webhooks.conftest import create_webhook, drain_until, hook_url, quick_settings


async def test_secret_is_shown_once_and_stored_encrypted(
    client: httpx.AsyncClient, sender: Sender, receiver: WebhookReceiver, db: Database
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), description="orders")
    listed = (await client.get("/v1/webhooks", headers=sender.headers)).json()["webhooks"]
    assert [w["id"] for w in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    one = (await client.get(f"/v1/webhooks/{hook['id']}", headers=sender.headers)).json()
    assert "secret" not in one
    assert one["description"] == "orders"
    async with db.session() as session:
        stored = await session.get_one(Webhook, hook["id"])
    assert hook["secret"].encode() not in stored.secret


async def test_rotation_signs_with_both_secrets_for_a_while(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver))
    response = await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=sender.headers)
    assert response.status_code == 200
    new_secret = response.json()["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != hook["secret"]
    await send(client, sender, to=["x@example.test"])
    await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (hook["secret"], new_secret):
        StandardWebhook(secret).verify(request.body, request.headers)


async def test_event_type_filter_and_changes(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), event_types=["bounced"])
    mx.reply_at("RCPT", 550, "5.1.1 no such user", to="gone@example.test")
    await send(client, sender, to=["gone@example.test", "ok@example.test"])
    await deliver()
    await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
    [request] = receiver.requests
    assert [(e["type"], e["email"]) for e in request.json()["data"]] == [
        ("bounced", "gone@example.test")
    ]
    response = await client.patch(
        f"/v1/webhooks/{hook['id']}",
        json={"event_types": ["processed"], "description": "now processed"},
        headers=sender.headers,
    )
    assert response.json()["event_types"] == ["processed"]
    bad = await client.patch(
        f"/v1/webhooks/{hook['id']}", json={"event_types": ["nope"]}, headers=sender.headers
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "event_types"


async def test_sendgrid_format_uses_sendgrids_field_names(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver), format="sendgrid")
    mx.reply_at("RCPT", 550, "5.1.1 no such user", to="gone@example.test")
    accepted = await send(
        client,
        sender,
        to=["gone@example.test", "ok@example.test"],
        categories=["receipt"],
        metadata={"order_id": "1234"},
    )
    await deliver()
    await drain_until(dispatcher, lambda: sum(len(r.json()) for r in receiver.accepted) >= 4)
    items = [
        item
        for r in receiver.requests
        for item in StandardWebhook(hook["secret"]).verify(r.body, r.headers)
    ]
    by_event = {(i["event"], i["email"]): i for i in items}
    bounce = by_event[("bounce", "gone@example.test")]
    assert bounce["status"] == "5.1.1"
    assert bounce["type"] == "bounce"
    assert bounce["bounce_classification"] == "Invalid Address"
    assert "no such user" in bounce["reason"]
    delivered = by_event[("delivered", "ok@example.test")]
    assert delivered["tls"] == 0
    assert delivered["response"].startswith("250")
    for item in items:
        assert item["category"] == "receipt"
        assert item["order_id"] == "1234"  # custom args merged flat
        assert item["sg_message_id"].startswith(accepted["id"] + ".")
        assert item["smtp-id"].startswith("<")
        assert len(item["sg_event_id"]) == 22
        assert isinstance(item["timestamp"], int)
    assert ("processed", "ok@example.test") in by_event


async def test_replay_resends_events_since_a_time(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver))
    await send(client, sender, to=["x@example.test", "y@example.test"])
    await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
    first = receiver.requests[0]
    response = await client.post(
        f"/v1/webhooks/{hook['id']}/replay",
        params={"since": "2000-01-01T00:00:00Z"},
        headers=sender.headers,
    )
    assert response.status_code == 202
    assert response.json() == {"queued": 2}
    await drain_until(dispatcher, lambda: len(receiver.accepted) >= 2)
    again = receiver.requests[1]
    assert again.json()["data"] == first.json()["data"]
    assert again.headers["webhook-id"] != first.headers["webhook-id"]  # a new message


async def test_another_accounts_webhook_is_404(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    db: Database,
    dns_server: FakeDNS,
    settings: Settings,
) -> None:
    hook = await create_webhook(client, sender, hook_url(receiver))
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    for method, path in (
        ("GET", f"/v1/webhooks/{hook['id']}"),
        ("PATCH", f"/v1/webhooks/{hook['id']}"),
        ("DELETE", f"/v1/webhooks/{hook['id']}"),
        ("GET", f"/v1/webhooks/{hook['id']}/deliveries"),
        ("POST", f"/v1/webhooks/{hook['id']}/rotate-secret"),
    ):
        response = await client.request(method, path, headers=other.headers, json={})
        assert response.status_code == 404, (method, path)
    assert (await client.get("/v1/webhooks", headers=other.headers)).json() == {"webhooks": []}
    deleted = await client.delete(f"/v1/webhooks/{hook['id']}", headers=sender.headers)
    assert deleted.status_code == 204
    assert (await client.get("/v1/webhooks", headers=sender.headers)).json() == {"webhooks": []}


async def test_outbox_rows_commit_and_roll_back_with_their_events(
    sender: Sender, db: Database, client: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    await create_webhook(client, sender, hook_url(receiver))
    new = [events.NewEvent(account_id=sender.account_id, type="processed") for _ in range(1000)]
    async with db.session() as session:
        await events.record(session, new)
        await session.rollback()
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookOutbox)) == 0
        await events.record(session, new)
        await session.commit()
        assert await session.scalar(select(func.count()).select_from(WebhookOutbox)) == 1000


async def test_urls_are_validated(client: httpx.AsyncClient, sender: Sender) -> None:
    for url, words in (
        ("ftp://hooks.test/x", "http"),
        ("https://user:pw@hooks.test/x", "credentials"),
        ("https://nowhere.test/x", "does not resolve"),
    ):
        response = await client.post("/v1/webhooks", json={"url": url}, headers=sender.headers)
        assert response.status_code == 400, url
        [error] = response.json()["errors"]
        assert error["field"] == "url", error
        assert words in error["message"], error


async def test_private_addresses_are_refused_unless_allowed(
    settings: Settings, sender: Sender, dns_server: FakeDNS
) -> None:
    dns_server.add_a("inside.test", "10.1.2.3")
    dns_server.add_aaaa("tunnelled.test", "2002:7f00:1::1")  # 6to4 of 127.0.0.1
    strict = settings.model_copy(update={"allow_private_destinations": False})
    async with ApiServer.running(strict) as api, httpx.AsyncClient(base_url=api.url) as http:
        for url in (
            "http://127.0.0.1:8080/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:127.0.0.1]/hook",
            "http://[fd00::1]/hook",
            "https://inside.test/hook",
            # IPv6 forms that embed a private IPv4 address (issue 10, item 8)
            "http://[::127.0.0.1]/hook",
            "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
            "http://[::ffff:0:7f00:1]/hook",
            "http://[fec0::1]/hook",
            "https://tunnelled.test/hook",
        ):
            response = await http.post("/v1/webhooks", json={"url": url}, headers=sender.headers)
            assert response.status_code == 400, url
            assert "non-public" in response.json()["errors"][0]["message"]


async def test_the_address_connected_to_is_checked_again(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    settings: Settings,
    db: Database,
    dns_server: FakeDNS,
) -> None:
    """DNS rebinding: the name pointed somewhere allowed when the webhook was added, and now
    resolves to loopback; the dispatcher refuses to connect."""
    hook = await create_webhook(client, sender, hook_url(receiver))
    strict = build_dispatcher(quick_settings(settings, allow_private_destinations=False), db)
    await send(client, sender, to=["x@example.test"])
    await strict.run()
    await strict.client.close()
    assert receiver.requests == []
    attempts: list[dict[str, Any]] = (
        await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=sender.headers)
    ).json()["deliveries"]
    assert attempts[0]["error"].startswith("refused:")
    assert attempts[0]["ip"] is None


async def test_https_endpoints_are_verified_against_their_host_name(
    client: httpx.AsyncClient,
    sender: Sender,
    settings: Settings,
    db: Database,
    dns_server: FakeDNS,
    tls_ca: trustme.CA,
    tmp_path: Path,
) -> None:
    """The dispatcher connects to the checked address, yet TLS still verifies the name in the
    URL (SNI), and a name the certificate does not cover is refused."""
    pem = tmp_path / "hooks.pem"
    tls_ca.issue_cert("secure-hooks.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
    dns_server.add_a("secure-hooks.test", "127.0.0.8")
    dns_server.add_a("other-name.test", "127.0.0.8")
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    async with running_receiver("127.0.0.8", tls_pem=pem) as receiver:
        good = await create_webhook(
            client,
            sender,
            f"https://secure-hooks.test:{receiver.port}/ok",
            event_types=["processed"],
        )
        bad = await create_webhook(
            client,
            sender,
            f"https://other-name.test:{receiver.port}/bad",
            event_types=["processed"],
        )
        dispatcher = build_dispatcher(quick_settings(settings), db)
        dispatcher.client.verify = context
        await send(client, sender, to=["x@example.test"])
        await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
        await dispatcher.client.close()
    assert [r.path for r in receiver.requests] == ["/ok"]
    assert receiver.requests[0].headers["host"] == f"secure-hooks.test:{receiver.port}"
    refused = (
        await client.get(f"/v1/webhooks/{bad['id']}/deliveries", headers=sender.headers)
    ).json()["deliveries"]
    assert "CERTIFICATE_VERIFY_FAILED" in refused[0]["error"]
    del good


UNPRINTABLE = ["\u0000", "\u0001", "\u001f", "\u007f", "\u0085", "\u00a0", "\u200b", "\u2028"]


async def test_urls_with_control_characters_are_refused(
    client: httpx.AsyncClient, sender: Sender, receiver: WebhookReceiver, db: Database
) -> None:
    """Issue 10, item 6: in the path, the query or the host, on create and on PATCH."""
    hook = await create_webhook(client, sender, hook_url(receiver))
    for char in UNPRINTABLE:
        for url in (
            hook_url(receiver, f"/hooks{char}x"),
            hook_url(receiver, f"/hooks?token=a{char}b"),
            f"http://hooks{char}.test:{receiver.port}/hooks",
        ):
            created = await client.post("/v1/webhooks", json={"url": url}, headers=sender.headers)
            patched = await client.patch(
                f"/v1/webhooks/{hook['id']}", json={"url": url}, headers=sender.headers
            )
            for response in (created, patched):
                assert response.status_code == 400, (url, response.text)
                [error] = response.json()["errors"]
                assert error["field"] == "url"
                # NUL is refused earlier, by the JSON parser every body goes through.
                expected = "NUL characters" if char == "\u0000" else "control characters"
                assert expected in error["message"]
    async with db.session() as session:
        assert list((await session.execute(select(Webhook.url))).scalars()) == [hook["url"]]


async def test_an_account_has_at_most_max_webhooks(
    client: httpx.AsyncClient, sender: Sender, settings: Settings
) -> None:
    hooks = [
        await create_webhook(client, sender, f"http://127.0.0.1:9/{n}")
        for n in range(settings.max_webhooks)
    ]
    over = await client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=sender.headers
    )
    assert over.status_code == 400, over.text
    assert "maximum number of webhooks" in over.json()["errors"][0]["message"]
    deleted = await client.delete(f"/v1/webhooks/{hooks[0]['id']}", headers=sender.headers)
    assert deleted.status_code == 204
    await create_webhook(client, sender, "http://127.0.0.1:9/x")


async def test_replays_are_capped_with_what_still_waits(
    sender: Sender, settings: Settings, travel: Callable[[timedelta], None]
) -> None:
    limited = settings.model_copy(update={"webhook_replay_max_events": 3})
    async with ApiServer.running(limited) as server, httpx.AsyncClient(base_url=server.url) as http:
        start = datetime.now(UTC) - timedelta(minutes=1)
        await send(http, sender, to=["a@example.test", "b@example.test"])
        travel(timedelta(hours=1))
        middle = datetime.now(UTC) + timedelta(minutes=30)
        await send(http, sender, to=["c@example.test", "d@example.test"])
        hook = await create_webhook(http, sender, "http://127.0.0.1:9/h")

        async def replay(**window: datetime) -> httpx.Response:
            params = {name: moment.isoformat() for name, moment in window.items()}
            path = f"/v1/webhooks/{hook['id']}/replay"
            return await http.post(path, params=params, headers=sender.headers)

        everything = await replay(since=start)
        assert everything.status_code == 400, everything.text  # 4 events, at most 3
        assert everything.json()["errors"][0]["field"] == "since"
        first_hour = await replay(since=start, until=middle)
        assert first_hour.status_code == 202, first_hour.text
        assert first_hour.json() == {"queued": 2}
        again = await replay(since=start, until=middle)
        assert again.status_code == 409, again.text  # 2 still wait, 2 more would make 4
        backwards = await replay(since=middle, until=start)
        assert backwards.status_code == 400, backwards.text


async def test_two_rotations_at_once_leave_both_new_secrets_signing(
    client: httpx.AsyncClient,
    sender: Sender,
    receiver: WebhookReceiver,
    dispatcher: Dispatcher,
) -> None:
    """The second rotation keeps the first one's secret as the previous one (not the secret
    both read before): neither caller is handed a secret that never signs."""
    hook = await create_webhook(client, sender, hook_url(receiver))
    path = f"/v1/webhooks/{hook['id']}/rotate-secret"
    answers = await asyncio.gather(*(client.post(path, headers=sender.headers) for _ in range(2)))
    secrets = [answer.json()["secret"] for answer in answers]
    await send(client, sender, to=["x@example.test"])
    await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
    [request] = receiver.requests
    for secret in secrets:
        StandardWebhook(secret).verify(request.body, request.headers)
