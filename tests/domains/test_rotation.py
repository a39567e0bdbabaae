"""DKIM key rotation end to end: mail received before, during and after a rotation verifies
with dkimpy and with Perl's Mail::DKIM against the selector in its signature; the new key
signs only once its record verifies; the old one retires after the grace period."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from app.accounts.models import Account
from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.domains import rotation
from app.domains import service as domains
from app.domains.models import Domain, DomainKey, KeyState
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, run_job, verify_dkim, verify_dkim_with_perl
from tests.test_end_to_end import Deliver, send
from worker import deliverability

SELECTOR = re.compile(rb"\bs=([^;\s]+)")


def selectors(message: bytes) -> list[str]:
    """The s= of each DKIM-Signature, in order."""
    head = message.split(b"\r\n\r\n", 1)[0]
    return [found.decode() for found in SELECTOR.findall(head)]


async def verifies(message: bytes, dns_server: FakeDNS) -> None:
    """Both verifiers accept the message's (first) signature."""
    assert await verify_dkim(message, dns_server)
    if shutil.which("perl"):
        assert (await verify_dkim_with_perl(message, dns_server))[0] == "rsa-sha256 pass"


async def stored(db: Database, domain_id: str) -> tuple[Domain, list[DomainKey]]:
    """The domain and its keys in rotation."""
    async with db.session() as session:
        domain = await session.get_one(Domain, domain_id)
        return domain, await rotation.keys_of(session, domain_id)


async def test_rotation_end_to_end(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    dns_server: FakeDNS,
    db: Database,
    settings: Settings,
    travel: Callable[[timedelta], None],
) -> None:
    old = sender.domain.dkim_selector
    rotated = await client.post(
        f"/v1/domains/{sender.domain.id}/dkim/rotate", headers=sender.headers
    )
    assert rotated.status_code == 201, rotated.text
    [pending] = rotated.json()["keys"]
    assert pending["state"] == "pending"
    new = pending["selector"]
    assert new != old
    record = next(r for r in rotated.json()["dns_records"] if r["name"].startswith(new + "."))
    again = await client.post(f"/v1/domains/{sender.domain.id}/dkim/rotate", headers=sender.headers)
    assert again.status_code == 409

    # During the rotation, before the new record is published: the old key still signs.
    await send(client, sender, to=["during@example.test"])
    await deliver()
    [during] = await mx.wait_for(1)
    assert selectors(during.data) == [old]
    await verifies(during.data, dns_server)
    verdict = await client.post(f"/v1/domains/{sender.domain.id}/verify", headers=sender.headers)
    assert verdict.json()["verified"] is True  # the signing key is fine
    next_key = next(r for r in verdict.json()["records"] if r["selector"] == new)
    assert next_key["status"] == "missing"
    assert (await stored(db, sender.domain.id))[0].dkim_selector == old

    # Published: the check promotes it; the old selector stays published for the grace.
    dns_server.add_txt(record["name"], record["value"])
    verdict = await client.post(f"/v1/domains/{sender.domain.id}/verify", headers=sender.headers)
    assert verdict.json()["verified"] is True
    domain, keys = await stored(db, sender.domain.id)
    assert domain.dkim_selector == new
    assert [(k.selector, k.state) for k in keys] == [(old, KeyState.RETIRING)]

    await send(client, sender, to=["after@example.test"])
    await deliver()
    [_, after] = await mx.wait_for(2)
    assert selectors(after.data) == [new]
    await verifies(after.data, dns_server)
    await verifies(during.data, dns_server)  # mail signed before still verifies

    # After the grace period the cron retires the old key and erases its private half.
    travel(settings.dkim_rotation_grace + timedelta(minutes=1))
    assert await run_job(settings, deliverability.reverify_domains) == 1
    domain, keys = await stored(db, sender.domain.id)
    assert [(k.selector, k.state, k.private_key) for k in keys] == [(old, KeyState.RETIRED, None)]
    published = domains.dns_records(domain, hostname=settings.hostname, keys=keys)
    assert not any(r.name.startswith(old + ".") for r in published)


async def test_ed25519_dual_signing_rotates_the_same_way(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    dns_server: FakeDNS,
    db: Database,
    settings: Settings,
) -> None:
    async with db.session() as session:
        owner = await session.get_one(Account, sender.account_id)
        both = await domains.add_domain(
            session, account=owner, name="both.test", secret_key=settings.secret_key_bytes(),
            ed25519=True,
        )  # fmt: skip
        for published in domains.dns_records(both, hostname=settings.hostname)[:2]:
            dns_server.add_txt(published.name, published.value)
        assert (await domains.verify_domain(session, resolver=dns_server.resolver(), domain=both))[
            0
        ]
        pending = await rotation.start_rotation(
            session, domain=both, secret_key=settings.secret_key_bytes()
        )
        await session.commit()
    assert [k.algorithm for k in pending] == ["rsa-sha256", "ed25519-sha256"]
    for key in pending:
        dns_server.add_txt(f"{key.selector}._domainkey.both.test", key.public_record)
    async with db.session() as session:
        domain = await session.get_one(Domain, both.id)
        assert (
            await domains.verify_domain(session, resolver=dns_server.resolver(), domain=domain)
        )[0]
        await session.commit()
    assert (domain.dkim_selector, domain.ed25519_selector) == tuple(k.selector for k in pending)

    body = {"from": "hi@both.test", "to": ["dual@example.test"], "subject": "two", "text": "x"}
    assert (await client.post("/v1/send", json=body, headers=sender.headers)).status_code == 202
    await deliver()
    [received] = await mx.wait_for(1)
    assert selectors(received.data) == [k.selector for k in pending]
    assert await verify_dkim(received.data, dns_server, index=0)
    assert await verify_dkim(received.data, dns_server, index=1)


def test_selectors_are_dated_and_unique() -> None:
    from datetime import UTC, datetime

    day = datetime(2026, 12, 6, tzinfo=UTC)
    assert rotation.new_selector(set(), day) == "cb20261206"
    assert rotation.new_selector({"cb20261206"}, day) == "cb20261206a"
    assert rotation.new_selector(set(), day, suffix="e") == "cb20261206e"


@pytest.mark.parametrize(("age", "due"), [(timedelta(days=89), False), (timedelta(days=91), True)])
async def test_rotation_by_age(
    sender: Sender, db: Database, dns_server: FakeDNS, settings: Settings,
    travel: Callable[[timedelta], None], age: timedelta, due: bool,
) -> None:  # fmt: skip
    travel(age)
    aged = settings.model_copy(update={"dkim_rotate_after": timedelta(days=90)})
    await run_job(aged, deliverability.reverify_domains)
    _, keys = await stored(db, sender.domain.id)
    assert [k.state for k in keys] == ([KeyState.PENDING] if due else [])


async def test_two_rotations_at_once_make_one_pending_set(
    sender: Sender, db: Database, settings: Settings
) -> None:
    async def rotate() -> str:
        async with db.session() as session:
            domain = await session.get_one(Domain, sender.domain.id)
            try:
                await rotation.start_rotation(
                    session, domain=domain, secret_key=settings.secret_key_bytes()
                )
            except rotation.RotationInProgress:
                return "in progress"
            await session.commit()
        return "started"

    assert sorted(await asyncio.gather(rotate(), rotate(), rotate())) == [
        "in progress",
        "in progress",
        "started",
    ]
    _, keys = await stored(db, sender.domain.id)
    assert len([key for key in keys if key.state == KeyState.PENDING]) == 1


async def test_a_rotation_from_a_stale_domain_never_takes_the_live_selector(
    sender: Sender, db: Database, settings: Settings
) -> None:
    """A domain read before another transaction made today's selector the signing one (a
    promotion): the new pending key must still get a selector of its own."""
    today = rotation.new_selector(set(), clock.now())
    async with db.session() as session:
        stale = await session.get_one(Domain, sender.domain.id)
        await session.commit()  # the read is over; the object is still held
        async with db.session() as elsewhere:  # the promotion, committed meanwhile
            promoted = await elsewhere.get_one(Domain, sender.domain.id)
            promoted.dkim_selector = today
            await elsewhere.commit()
        [pending] = await rotation.start_rotation(
            session, domain=stale, secret_key=settings.secret_key_bytes()
        )
        await session.commit()
    assert pending.selector != today
