"""Verification flips with the records: the daily cron turns a domain unverified when its
DKIM record disappears (event, metric, 403 on the API), and verified again when it is back;
a temporary DNS failure changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import Database
from app.domains import service as domains
from app.domains.models import Domain
from app.events.models import Event
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, run_job, run_worker
from tests.test_end_to_end import message_view, send
from worker import deliverability


async def domain_row(db: Database, domain_id: str) -> Domain:
    """The domain as stored."""
    async with db.session() as session:
        return await session.get_one(Domain, domain_id)


async def event_types(db: Database) -> list[str]:
    """Types of the events recorded, in order."""
    async with db.session() as session:
        return list((await session.execute(select(Event.type).order_by(Event.id))).scalars())


def lost_count() -> float:
    """The metric of domains that lost their verification."""
    return REGISTRY.get_sample_value("columba_domain_verification_lost_total") or 0.0


async def test_the_cron_unverifies_a_domain_whose_dkim_record_is_removed(
    client: httpx.AsyncClient,
    sender: Sender,
    db: Database,
    dns_server: FakeDNS,
    settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:
    body = {"from": sender.address(), "to": ["a@example.test"], "subject": "s", "text": "t"}
    assert (await client.post("/v1/send", json=body, headers=sender.headers)).status_code == 202
    # Checked now (the sender fixture verified it): the cron leaves it until a day has passed.
    dns_server.remove(domains.dkim_record_name(sender.domain))
    assert await run_job(settings, deliverability.reverify_domains) == 0
    assert (await domain_row(db, sender.domain.id)).verified_at is not None

    before = lost_count()
    travel(timedelta(days=1, minutes=1))
    assert await run_job(settings, deliverability.reverify_domains) == 1
    stored = await domain_row(db, sender.domain.id)
    assert stored.verified_at is None
    assert stored.last_check is not None
    assert stored.last_check["verified"] is False
    assert "domain_failed" in await event_types(db)
    assert lost_count() == before + 1

    refused = await client.post("/v1/send", json=body, headers=sender.headers)
    assert refused.status_code == 403
    [error] = refused.json()["errors"]
    assert error["field"] == "from.email"
    assert "sender.test is not verified" in error["message"]

    # Published again: the next check verifies it, with an event.
    dns_server.add_txt(domains.dkim_record_name(sender.domain), sender.domain.dkim_public_record)
    travel(timedelta(days=1, minutes=1))
    assert await run_job(settings, deliverability.reverify_domains) == 1
    assert (await domain_row(db, sender.domain.id)).verified_at is not None
    assert (await event_types(db))[-1] == "domain_verified"
    assert (await client.post("/v1/send", json=body, headers=sender.headers)).status_code == 202


async def test_a_dns_failure_does_not_unverify(
    sender: Sender, db: Database, dns_server: FakeDNS, settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:  # fmt: skip
    dns_server.set_servfail(domains.dkim_record_name(sender.domain))
    travel(timedelta(days=2))
    assert await run_job(settings, deliverability.reverify_domains) == 1
    stored = await domain_row(db, sender.domain.id)
    assert stored.verified_at is not None
    assert stored.last_check is not None
    assert stored.last_check["records"][0]["status"] == "error"


async def test_the_api_verifies_and_reports_every_record(
    client: httpx.AsyncClient, sender: Sender, dns_server: FakeDNS, settings: Settings
) -> None:
    dns_server.add_a(settings.hostname, "192.0.2.10")
    dns_server.add_txt(sender.domain.name, f"v=spf1 a:{settings.hostname} ~all")
    response = await client.post(f"/v1/domains/{sender.domain.id}/verify", headers=sender.headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["verified"] is True
    statuses = {r["kind"]: r["status"] for r in report["records"]}
    assert statuses == {
        "dkim": "valid",
        "spf": "valid",
        "bounce_mx": "missing",
        "bounce_spf": "missing",
        "dmarc": "missing",
    }
    bounce_mx = next(r for r in report["records"] if r["kind"] == "bounce_mx")
    assert bounce_mx["expected"] == f"10 {settings.hostname}."

    dns_server.remove(domains.dkim_record_name(sender.domain))
    again = await client.post(f"/v1/domains/{sender.domain.id}/verify", headers=sender.headers)
    assert again.json()["verified"] is False
    shown = (await client.get(f"/v1/domains/{sender.domain.id}", headers=sender.headers)).json()
    assert shown["verified"] is False
    assert shown["last_check"]["records"][0]["status"] == "missing"
    listed = (await client.get("/v1/domains", headers=sender.headers)).json()
    assert [d["domain"] for d in listed["domains"]] == ["sender.test"]


async def test_another_accounts_domain_is_not_found(
    client: httpx.AsyncClient, sender: Sender, db: Database, dns_server: FakeDNS,
    settings: Settings,
) -> None:  # fmt: skip
    from tests.support import make_sender

    rival = await make_sender(db, dns_server, settings, account="rival", domain="rival.test")
    for method, path in [
        ("GET", f"/v1/domains/{rival.domain.id}"),
        ("POST", f"/v1/domains/{rival.domain.id}/verify"),
        ("POST", f"/v1/domains/{rival.domain.id}/dkim/rotate"),
    ]:
        response = await client.request(method, path, headers=sender.headers)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["errors"][0]["field"] == "domain_id"


async def test_mail_queued_for_a_domain_that_lost_its_verification_waits_for_the_fix(
    client: httpx.AsyncClient, sender: Sender, db: Database, dns_server: FakeDNS,
    settings: Settings, redis_url: str, mx: ScriptedMX,
) -> None:  # fmt: skip
    accepted = await send(client, sender, to=["a@example.test"])
    dns_server.remove(domains.dkim_record_name(sender.domain))
    async with db.session() as session:
        domain = await session.get_one(Domain, sender.domain.id)
        await domains.verify_domain(session, resolver=dns_server.resolver(), domain=domain)
        await session.commit()
    await run_worker(settings, redis_url)
    view = await message_view(client, sender, accepted["id"])
    [attempt] = view["recipients"][0]["attempts"]
    assert (attempt["outcome"], attempt["code"], attempt["enhanced_code"]) == (
        "deferred", 451, "4.7.0",
    )  # fmt: skip
    assert "sending domain sender.test is not verified" in attempt["response"]
    assert mx.messages == []
