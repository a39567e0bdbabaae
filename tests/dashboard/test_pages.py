"""Dashboard pages over a real delivery run, empty states, and one account's data only."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from html import unescape

import httpx

from app.core.config import Settings
from app.core.db import Database
from tests.dashboard.support import Dashboard, dashboard
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, make_sender

MESSAGE_LINK = re.compile(r'href="/dashboard/messages/([0-9A-Z]{26})"')


async def _send(client: httpx.AsyncClient, sender: Sender, to: str, subject: str) -> str:
    """Send one message; its id."""
    answer = await client.post(
        "/v1/send",
        headers=sender.headers,
        json={
            "from": sender.address(), "to": [to], "subject": subject,
            "text": "Your order shipped.", "html": "<p>Your <b>order</b> shipped.</p>",
        },
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


async def test_a_delivery_shows_on_every_page(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Callable[[], Awaitable[int]],
) -> None:
    mx.reply_at("RCPT", 450, to="busy@example.test")
    message_id = await _send(client, sender, "buyer@example.test", "Order 1001 confirmed")
    await _send(client, sender, "busy@example.test", "Order 1002 confirmed")
    await deliver()
    session = await dashboard(client, sender.key)
    overview = await session.get("/dashboard")
    assert re.search(r"delivered</span><span class=\"value\">1<", overview.text)
    assert re.search(r"deferred</span><span class=\"value\">1<", overview.text)
    assert "100.0 %" in overview.text  # delivery rate: no bounce
    assert "p50" in overview.text
    assert "deferred (waiting to retry)</th><td>1<" in overview.text
    assert "due</th><td>0<" in overview.text

    found = await session.get("/dashboard/activity", recipient="BUYER@example.test")
    assert MESSAGE_LINK.findall(found.text) == [message_id, message_id]
    assert "Order 1001 confirmed" in found.text

    timeline = await session.get(f"/dashboard/messages/{message_id}")
    assert "attempt: delivered" in timeline.text
    assert "processed" in timeline.text
    assert "mx1.example.test" in timeline.text
    assert "<code>250" in timeline.text

    source = await session.get(f"/dashboard/messages/{message_id}/source")
    assert f"pass: d={sender.domain.name}" in source.text
    assert "Subject: Order 1001 confirmed" in source.text
    # The bytes shown, rendered again, are exactly the bytes the MX received.
    raw = re.search(r'<pre class="raw">(.*?)</pre>', source.text, re.DOTALL)
    assert raw
    assert unescape(raw.group(1)).encode() == mx.messages[0].data

    html = await session.get(f"/dashboard/messages/{message_id}/html")
    assert html.headers["content-security-policy"].startswith("sandbox;")
    assert "<b>order</b>" in html.text


async def test_a_new_account_sees_what_to_do_next(
    client: httpx.AsyncClient, db: Database, dns_server: FakeDNS, settings: Settings
) -> None:
    newcomer = await make_sender(db, dns_server, settings, account="new", domain="new.test")
    session = await dashboard(client, newcomer.key)
    hints = {
        "/dashboard": "Nothing sent in this range yet",
        "/dashboard/activity": "No messages yet",
        "/dashboard/suppressions": "No suppressions",
        "/dashboard/webhooks": "No webhook yet",
    }
    for path, hint in hints.items():
        page = await session.get(path)
        assert page.status_code == 200, path
        assert hint in page.text, path
    domains = await session.get("/dashboard/domains")
    assert "dkim" in domains.text.lower()
    assert "new.test" in domains.text


async def test_a_session_sees_its_own_account_only(
    client: httpx.AsyncClient,
    db: Database,
    dns_server: FakeDNS,
    settings: Settings,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Callable[[], Awaitable[int]],
) -> None:
    other = await make_sender(db, dns_server, settings, account="other", domain="other.test")
    mine = await _send(client, sender, "acme-customer@example.test", "Acme secret")
    theirs = await _send(client, other, "other-customer@example.test", "Other mail")
    await deliver()
    acme = await dashboard(client, sender.key)
    await acme.post("/dashboard/suppressions", {"email": "acme-blocked@example.test"})
    session = await dashboard(client, other.key)

    listed = await session.get("/dashboard/activity")
    assert MESSAGE_LINK.findall(listed.text) == [theirs, theirs]
    assert "Acme secret" not in listed.text
    for path in (f"/dashboard/messages/{mine}", f"/dashboard/messages/{mine}/source"):
        assert (await session.get(path)).status_code == 404, path
    searched = await session.get("/dashboard/activity", recipient="acme-customer@example.test")
    assert "Acme secret" not in searched.text
    assert "acme-blocked" not in (await session.get("/dashboard/suppressions")).text
    domains = (await session.get("/dashboard/domains")).text
    assert "other.test" in domains
    assert "sender.test" not in domains
    overview = (await session.get("/dashboard")).text
    assert re.search(r"requests</span><span class=\"value\">1<", overview)
    await _cannot_touch_keys_of(session, acme)


async def _cannot_touch_keys_of(session: Dashboard, owner: Dashboard) -> None:
    """Another account's keys are neither listed nor revocable."""
    owner_keys = (await owner.get("/dashboard/keys")).text
    owner_key_id = owner_keys.split('action="/dashboard/keys/', 1)[1].split("/revoke", 1)[0]
    assert owner_key_id not in (await session.get("/dashboard/keys")).text
    refused = await session.post(f"/dashboard/keys/{owner_key_id}/revoke", {})
    assert refused.status_code == 404
    assert (await owner.get("/dashboard")).status_code == 200  # still signed in: not revoked


async def test_suppressions_are_added_searched_and_removed(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    session = await dashboard(client, sender.key)
    for email in ("alice@example.test", "bob@example.test"):
        await session.post("/dashboard/suppressions", {"email": email, "reason": "asked"})
    found = await session.get("/dashboard/suppressions", email="ali")
    assert "alice@example.test" in found.text
    assert "bob@example.test" not in found.text
    await session.post(
        "/dashboard/suppressions/remove", {"email": "alice@example.test", "type": "manual"}
    )
    left = (await session.get("/dashboard/suppressions")).text
    assert "alice@example.test" not in left
    assert "bob@example.test" in left
    bad = await session.post("/dashboard/suppressions", {"email": "not an address"})
    assert bad.status_code == 400


async def test_a_key_is_shown_once_and_keeps_its_scopes(
    client: httpx.AsyncClient, sender: Sender
) -> None:
    session = await dashboard(client, sender.key)
    data = {"csrf": await session.csrf(), "name": "reporting"}
    body = httpx.QueryParams(data).merge({"scope": ["stats.read", "messages.read"]})
    created = await client.post(
        "/dashboard/keys",
        content=str(body),
        headers={**session._headers(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    key = re.search(r'<pre class="key" id="new-key">(SG\.[^<]+)</pre>', created.text)
    assert key, created.text
    assert "messages.read, stats.read" in created.text
    assert key.group(1) not in (await session.get("/dashboard/keys")).text
    scoped = await dashboard(client, key.group(1))
    assert (await scoped.get("/dashboard")).status_code == 200
    assert (await scoped.get("/dashboard/suppressions")).status_code == 403
