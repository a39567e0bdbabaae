"""A message's whole path: POST /v1/send → worker → MX host, with the outcome in the API."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, verify_dkim

Deliver = Callable[[], Awaitable[int]]


async def send(client: httpx.AsyncClient, sender: Sender, **fields: Any) -> dict[str, Any]:
    """POST /v1/send and return the 202 body."""
    body = {"from": sender.address(), "subject": "Hello", "text": "Hi there.", **fields}
    response = await client.post("/v1/send", json=body, headers=sender.headers)
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


async def message_view(client: httpx.AsyncClient, sender: Sender, message_id: str) -> Any:
    """GET /v1/messages/{id}."""
    response = await client.get(f"/v1/messages/{message_id}", headers=sender.headers)
    assert response.status_code == 200, response.text
    return response.json()


def status_of(view: dict[str, Any], address: str) -> str:
    """One recipient's status in a message view."""
    return str(next(r["status"] for r in view["recipients"] if r["email"] == address))


async def test_message_is_signed_delivered_and_reported(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, dns_server: FakeDNS
) -> None:
    accepted = await send(
        client, sender, to=["alice@example.test"], cc=[{"email": "bob@example.test", "name": "Bob"}]
    )
    assert [r["status"] for r in accepted["recipients"]] == ["queued", "queued"]

    await deliver()

    [received] = await mx.wait_for(1)
    assert sorted(received.rcpt_tos) == ["alice@example.test", "bob@example.test"]
    # MAIL FROM is a VERP address on the bounce domain (issue 5; tests/bounces checks its token)
    assert received.mail_from.startswith("bounces+")
    assert received.mail_from.endswith("@bounces.sender.test")
    assert await verify_dkim(received.data, dns_server)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["To"] == "alice@example.test"
    assert parsed["Cc"] == "Bob <bob@example.test>"
    assert parsed.get_content().strip() == "Hi there."

    view = await message_view(client, sender, accepted["id"])
    assert {r["status"] for r in view["recipients"]} == {"delivered"}
    alice = view["recipients"][0]
    assert [e["type"] for e in alice["events"]] == ["processed", "delivered"]
    [attempt] = alice["attempts"]
    assert attempt["mx_host"] == "mx1.example.test"
    assert attempt["ip"] == "127.0.0.2"
    assert attempt["code"] == 250


async def test_starttls_is_used_when_offered(
    client: httpx.AsyncClient,
    sender: Sender,
    start_mx: Callable[..., Awaitable[ScriptedMX]],
    dns_server: FakeDNS,
    deliver: Deliver,
) -> None:
    dns_server.add_mx("secure.test", (10, "mx.secure.test"))
    dns_server.add_a("mx.secure.test", "127.0.0.3")
    mx = await start_mx("127.0.0.3", tls=True)
    accepted = await send(client, sender, to=["carol@secure.test"])
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.tls
    view = await message_view(client, sender, accepted["id"])
    assert view["recipients"][0]["attempts"][0]["tls_version"].startswith("TLS")


async def test_implicit_mx_is_the_domains_own_address(
    client: httpx.AsyncClient,
    sender: Sender,
    start_mx: Callable[..., Awaitable[ScriptedMX]],
    dns_server: FakeDNS,
    deliver: Deliver,
) -> None:
    dns_server.add_a("nomx.test", "127.0.0.4")  # no MX record at all (RFC 5321 §5.1)
    mx = await start_mx("127.0.0.4")
    await send(client, sender, to=["dave@nomx.test"])
    await deliver()
    [received] = await mx.wait_for(1)
    assert received.rcpt_tos == ["dave@nomx.test"]


async def test_unreachable_first_mx_falls_back_to_the_next(
    client: httpx.AsyncClient,
    sender: Sender,
    start_mx: Callable[..., Awaitable[ScriptedMX]],
    dns_server: FakeDNS,
    deliver: Deliver,
) -> None:
    dns_server.add_mx("backup.test", (10, "primary.backup.test"), (20, "secondary.backup.test"))
    dns_server.add_a("primary.backup.test", "127.0.0.5")  # nothing listens there
    dns_server.add_a("secondary.backup.test", "127.0.0.6")
    mx = await start_mx("127.0.0.6")
    accepted = await send(client, sender, to=["erin@backup.test"])
    await deliver()
    await mx.wait_for(1)
    view = await message_view(client, sender, accepted["id"])
    assert view["recipients"][0]["attempts"][0]["mx_host"] == "secondary.backup.test"


async def test_null_mx_fails_at_once_without_connecting(
    client: httpx.AsyncClient, sender: Sender, dns_server: FakeDNS, deliver: Deliver
) -> None:
    dns_server.add_mx("nomail.test", (0, "."))
    accepted = await send(client, sender, to=["frank@nomail.test"])
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    recipient = view["recipients"][0]
    assert recipient["status"] == "bounced"
    assert recipient["last_enhanced_code"] == "5.1.10"
    assert recipient["attempts"][0]["mx_host"] is None


async def test_nxdomain_bounces(
    client: httpx.AsyncClient, sender: Sender, deliver: Deliver
) -> None:
    accepted = await send(client, sender, to=["gina@does-not-exist.test"])
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    assert view["recipients"][0]["status"] == "bounced"
    assert view["recipients"][0]["last_enhanced_code"] == "5.1.2"


async def test_servfail_defers(
    client: httpx.AsyncClient, sender: Sender, dns_server: FakeDNS, deliver: Deliver
) -> None:
    dns_server.set_servfail("broken-dns.test")
    accepted = await send(client, sender, to=["hal@broken-dns.test"])
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    assert view["recipients"][0]["status"] == "deferred"
    assert view["recipients"][0]["last_enhanced_code"] == "4.4.3"


async def test_rcpt_550_bounces_only_that_recipient(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mx.reply_at("RCPT", 550, "5.1.1 no such user", to="nobody@example.test")
    accepted = await send(client, sender, to=["nobody@example.test", "ok@example.test"])
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    assert status_of(view, "nobody@example.test") == "bounced"
    assert status_of(view, "ok@example.test") == "delivered"
    nobody = next(r for r in view["recipients"] if r["email"] == "nobody@example.test")
    assert nobody["last_code"] == 550
    assert nobody["last_enhanced_code"] == "5.1.1"
    assert [e["type"] for e in nobody["events"]] == ["processed", "bounced"]


async def test_rcpt_450_defers_then_delivers_on_retry(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    travel: Callable[[timedelta], None],
) -> None:
    mx.reply_at("RCPT", 450, "4.2.1 mailbox busy, try later", times=1)
    accepted = await send(client, sender, to=["busy@example.test"])
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    recipient = view["recipients"][0]
    assert recipient["status"] == "deferred"
    assert mx.messages == []

    await deliver()  # not due yet: nothing happens
    assert mx.messages == []

    travel(timedelta(minutes=6))  # past the first retry wait (5 minutes ± 10%)
    await deliver()
    await mx.wait_for(1)
    view = await message_view(client, sender, accepted["id"])
    recipient = view["recipients"][0]
    assert recipient["status"] == "delivered"
    assert [a["code"] for a in recipient["attempts"]] == [450, 250]
    assert [e["type"] for e in recipient["events"]] == ["processed", "deferred", "delivered"]
