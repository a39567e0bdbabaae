"""GET /metrics after a real delivery run: every metric of issue 15 is there, with the values
the run implies (counted as the difference between a scrape before and one after)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.observability.exposition import QueueProbe
from app.webhooks.dispatcher import build_dispatcher
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.fakes.webhooks import running_receiver
from tests.observability.support import Scrape, scrape
from tests.support import ApiServer, Sender, make_key
from tests.test_end_to_end import Deliver, send
from tests.webhooks.conftest import create_webhook, drain_until, quick_settings

EXPECTED_FAMILIES = {
    "columba_http_requests": "counter",
    "columba_http_request_duration_seconds": "histogram",
    "columba_messages_accepted": "counter",
    "columba_recipients_accepted": "counter",
    "columba_recipients_final": "counter",
    "columba_deferrals": "counter",
    "columba_bounces": "counter",
    "columba_smtp_replies": "counter",
    "columba_delivery_latency_seconds": "histogram",
    "columba_smtp_connections": "gauge",
    "columba_throttle_waits": "counter",
    "columba_dkim_signing_seconds": "histogram",
    "columba_webhook_deliveries": "counter",
    "columba_queue_recipients": "gauge",
    "columba_queue_oldest_due_age_seconds": "gauge",
    "columba_webhook_outbox_backlog": "gauge",
    "columba_inbound_messages": "counter",
    "columba_domain_checks": "counter",
}


def fresh_queue_probe(api: ApiServer) -> None:
    """Read the queue at the next scrape (the probe caches it for a few seconds)."""
    api.app.state.queue_probe = QueueProbe(api.app.state.db, ttl=0)


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much a series grew between two scrapes."""
    return after.value(name, **labels) - before.value(name, **labels)


async def test_metrics_after_a_delivery_run(
    api: ApiServer,
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    db: Database,
    settings: Settings,
    dns_server: FakeDNS,
) -> None:
    key = await make_key(db, account=sender.account_name, scopes=["metrics.read"])
    fresh_queue_probe(api)
    before = await scrape(client, key)
    mx.reply_at("RCPT", 450, "4.2.1 mailbox busy", to="busy@example.test")
    mx.reply_at("RCPT", 550, "5.1.1 no such user", to="gone@example.test")
    dns_server.add_a("hooks.test", "127.0.0.7")
    async with running_receiver("127.0.0.7") as receiver:
        await create_webhook(client, sender, f"http://hooks.test:{receiver.port}/hooks")
        await send(client, sender, to=["ok@example.test", "busy@example.test", "gone@example.test"])
        await deliver()
        dispatcher = build_dispatcher(quick_settings(settings), db)
        await drain_until(dispatcher, lambda: len(receiver.accepted) >= 1)
        await dispatcher.client.close()
    after = await scrape(client, key)

    missing = {n: t for n, t in EXPECTED_FAMILIES.items() if after.families.get(n) != t}
    assert missing == {}, f"absent or of another type: {missing}"
    # Accepting: one message of three recipients, queued.
    assert delta(before, after, "columba_messages_accepted_total") == 1
    assert delta(before, after, "columba_recipients_accepted_total", status="queued") == 3
    send_route = {"route": "/v1/send", "method": "POST"}
    assert delta(before, after, "columba_http_requests_total", **send_route, status="202") == 1
    assert delta(before, after, "columba_http_request_duration_seconds_count", **send_route) == 1
    # Delivering: one delivered, one deferred, one bounced; their replies by class.
    assert delta(before, after, "columba_recipients_final_total", status="delivered") == 1
    assert delta(before, after, "columba_recipients_final_total", status="bounced") == 1
    for reply_class in ("2xx", "4xx", "5xx"):
        assert delta(before, after, "columba_smtp_replies_total", **{"class": reply_class}) == 1
    assert delta(before, after, "columba_deferrals_total", provider="other") == 1
    assert delta(before, after, "columba_bounces_total", kind="hard", provider="other") == 1
    assert delta(before, after, "columba_delivery_latency_seconds_count") == 1
    latency = delta(before, after, "columba_delivery_latency_seconds_sum")
    assert 0 < latency < 60
    assert delta(before, after, "columba_dkim_signing_seconds_count") >= 1
    assert after.value("columba_smtp_connections") == 0  # the worker closed them on stopping
    assert after.has("columba_throttle_waits_total")
    # Webhooks: at least one batch delivered; the queue now: the busy recipient waits.
    assert delta(before, after, "columba_webhook_deliveries_total", outcome="success") >= 1
    assert after.value("columba_queue_recipients", state="deferred") == 1
    assert after.value("columba_queue_recipients", state="due") == 0
    assert after.value("columba_queue_oldest_due_age_seconds") == 0
    assert after.value("columba_webhook_outbox_backlog") >= 0


async def test_queue_gauges_count_due_recipients_and_their_age(
    api: ApiServer,
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    travel: Callable[[timedelta], None],
) -> None:
    key = await make_key(db, account=sender.account_name, scopes=["metrics.read"])
    await send(client, sender, to=["a@example.test", "b@example.test"])
    tomorrow = int((clock.now() + timedelta(days=1)).timestamp())
    await send(client, sender, to=["c@example.test"], send_at=tomorrow)
    travel(timedelta(minutes=10))  # nobody delivers: the due ones wait ten minutes
    fresh_queue_probe(api)
    now = await scrape(client, key)
    assert now.value("columba_queue_recipients", state="due") == 2
    assert now.value("columba_queue_recipients", state="scheduled") == 1
    assert now.value("columba_queue_recipients", state="deferred") == 0
    assert 600 <= now.value("columba_queue_oldest_due_age_seconds") < 660


async def test_labels_are_bounded(client: httpx.AsyncClient, sender: Sender, db: Database) -> None:
    key = await make_key(db, account=sender.account_name, scopes=["metrics.read"])
    await client.get("/v1/messages/01HXYZNOTAREALIDATALL00000", headers=sender.headers)
    await client.get("/no/such/path/with-a-token-abcdef0123456789")
    await client.request("PROPFIND", "/healthz")
    await client.get("/t/o/AAAAtokenNOTREAL0123")  # a tracking link, served by the fast path
    page = await scrape(client, key)
    routes = {s.labels["route"] for s in page.samples if s.name == "columba_http_requests_total"}
    assert {"/v1/messages/{message_id}", "/t/o/{token}"} <= routes
    assert not any(part in route for route in routes for part in ("01HXYZ", "abcdef", "AAAA"))
    assert "<unmatched>" in routes
    methods = {s.labels["method"] for s in page.samples if s.name == "columba_http_requests_total"}
    assert "PROPFIND" not in methods
    assert "OTHER" in methods
    text = "\n".join(f"{s.name}{s.labels}" for s in page.samples)
    assert "@" not in text  # no address anywhere
    assert sender.account_id not in text
