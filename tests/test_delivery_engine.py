"""The delivery engine through the whole stack: leases, retries, expiry, throttling, bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from arq.connections import create_pool
from redis.asyncio import Redis
from sqlalchemy import select, update

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.core.queue import DELIVER_JOB, QUEUE_NAME, delivery_job_id, redis_settings
from app.messages import dispatch
from app.messages.models import Recipient
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX
from tests.support import Sender, run_worker
from tests.test_end_to_end import Deliver, message_view, send
from worker.runtime import Runtime

Travel = Callable[[timedelta], None]
StartMX = Callable[..., Awaitable[ScriptedMX]]


@pytest_asyncio.fixture
async def runtime(settings: Settings, redis_url: str) -> AsyncIterator[Runtime]:
    """A worker runtime in this process, as a worker process would hold it."""
    redis = Redis.from_url(redis_url)
    worker = Runtime(settings, redis=redis)
    yield worker
    await worker.close()
    await redis.aclose()


async def recipient_rows(db: Database, message_id: str) -> list[Recipient]:
    """A message's recipients as stored."""
    async with db.session() as session:
        query = select(Recipient).where(Recipient.message_id == message_id).order_by(Recipient.id)
        return list((await session.execute(query)).scalars())


async def five_workers_deliver(settings: Settings, redis_url: str, message_id: str) -> int:
    """Five runtimes deliver the same message at the same moment; returns outcomes recorded."""
    redis = Redis.from_url(redis_url)
    workers = [Runtime(settings, redis=redis) for _ in range(5)]
    try:
        recorded = await asyncio.gather(*(w.deliver_message(message_id) for w in workers))
    finally:
        for worker in workers:
            await worker.close()
        await redis.aclose()
    return sum(recorded)


async def test_five_workers_on_one_recipient_make_one_transaction(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, settings: Settings, redis_url: str
) -> None:
    accepted = await send(client, sender, to=["once@example.test"])
    assert await five_workers_deliver(settings, redis_url, accepted["id"]) == 1
    assert mx.transactions == 1
    assert mx.messages[0].rcpt_tos == ["once@example.test"]


async def test_five_workers_on_one_message_deliver_each_recipient_once(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, settings: Settings, redis_url: str
) -> None:
    addresses = [f"r{i}@example.test" for i in range(20)]
    accepted = await send(client, sender, to=addresses)
    assert await five_workers_deliver(settings, redis_url, accepted["id"]) == 20
    # Concurrent claimers may split a message (SKIP LOCKED), never share a recipient.
    delivered = [address for message in mx.messages for address in message.rcpt_tos]
    assert sorted(delivered) == sorted(addresses)


async def test_a_late_worker_cannot_overwrite_a_reclaimed_recipient(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, db: Database, travel: Travel
) -> None:
    accepted = await send(client, sender, to=["late@example.test"])
    async with db.session() as session:
        stale = await dispatch.claim(
            session, message_id=accepted["id"], lease=timedelta(seconds=30)
        )
        await session.commit()
    travel(timedelta(minutes=1))  # the first worker's lease ran out: another may claim
    async with db.session() as session:
        fresh = await dispatch.claim(
            session, message_id=accepted["id"], lease=timedelta(seconds=30)
        )
        await session.commit()
    assert [r.id for r in fresh.recipients] == [r.id for r in stale.recipients]
    async with db.session() as session:
        # The first worker wakes up and tries to record: fenced out by the lease token.
        assert await dispatch.still_leased(session, stale.recipients) == set()
        assert await dispatch.still_leased(session, fresh.recipients) == {
            r.id for r in fresh.recipients
        }


async def test_arq_giving_up_never_changes_a_recipient(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    settings: Settings,
    redis_url: str,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accepted = await send(client, sender, to=["sturdy@example.test"])
    # The API wakes workers over pub/sub now; a job is what older code still enqueues.
    queue = await create_pool(redis_settings(redis_url), default_queue_name=QUEUE_NAME)
    await queue.enqueue_job(DELIVER_JOB, accepted["id"], _job_id=delivery_job_id(accepted["id"]))
    await queue.aclose()

    def broken(self: Runtime) -> None:
        raise RuntimeError("job failed")

    monkeypatch.setattr(Runtime, "wake", broken)
    jobs = await run_worker(settings, redis_url, max_tries=1)  # every job fails, arq gives up
    assert jobs >= 1
    [row] = await recipient_rows(db, accepted["id"])
    assert row.status == "delivered"  # the database, not arq, decided: the pump found it due
    assert len(mx.messages) == 1


async def test_a_failing_batch_leaves_recipients_to_their_lease(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    settings: Settings,
    redis_url: str,
    db: Database,
    travel: Travel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accepted = await send(client, sender, to=["patient@example.test"])

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database went away")

    with monkeypatch.context() as patched:
        patched.setattr(dispatch, "load_messages", broken)
        await run_worker(settings, redis_url)
    [row] = await recipient_rows(db, accepted["id"])
    assert row.status == "sending"  # only the lease says anything; no final state was written
    travel(settings.lease_duration + timedelta(seconds=1))
    await run_worker(settings, redis_url)  # the lease ran out: claimed and delivered
    [row] = await recipient_rows(db, accepted["id"])
    assert row.status == "delivered"
    assert [m.rcpt_tos for m in mx.messages] == [["patient@example.test"]]


async def test_retries_send_byte_identical_messages(
    client: httpx.AsyncClient,
    sender: Sender,
    start_mx: StartMX,
    dns_server: FakeDNS,
    deliver: Deliver,
    travel: Travel,
    runtime: Runtime,
    db: Database,
) -> None:
    for name, ip in (("first.test", "127.0.0.3"), ("second.test", "127.0.0.4")):
        dns_server.add_mx(name, (10, f"mx.{name}"))
        dns_server.add_a(f"mx.{name}", ip)
    first, second = await start_mx("127.0.0.3"), await start_mx("127.0.0.4")
    second.reply_at("RCPT", 451, "4.3.0 try again", times=1)
    accepted = await send(
        client, sender, to=["a@first.test", "b@second.test"], html="<p>Hi <b>there</b></p>"
    )
    await deliver()
    travel(timedelta(minutes=6))
    await deliver()  # the retry, later, in a new worker
    [one], [two] = first.messages, second.messages
    assert one.data == two.data
    async with db.session() as session:
        loaded = await dispatch.load_message(session, message_id=accepted["id"])
    rendered, _ = runtime.composer.signed(loaded)
    assert rendered == one.data  # and any other process renders the same bytes


async def test_eight_bit_content_is_sent_seven_bit_safe(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mx.advertise_8bitmime = False
    await send(client, sender, to=["eu@example.test"], subject="Grüße", text="Schöne Grüße – €5")
    await deliver()
    [received] = await mx.wait_for(1)
    assert max(received.data) < 128


async def test_recipient_expires_after_the_maximum_age(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    travel: Travel,
    settings: Settings,
) -> None:
    mx.reply_at("RCPT", 451, "4.3.0 temporary trouble")
    accepted = await send(client, sender, to=["never@example.test"])
    await deliver()
    travel(settings.max_message_age + timedelta(minutes=1))
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    recipient = view["recipients"][0]
    assert recipient["status"] == "expired"
    assert recipient["last_enhanced_code"] == "4.4.7"
    assert [e["type"] for e in recipient["events"]] == ["processed", "deferred", "expired"]


async def test_a_retry_hint_in_the_reply_is_honoured(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver, db: Database
) -> None:
    mx.reply_at("RCPT", 450, "4.2.0 Greylisted, please try again in 120 seconds", times=1)
    accepted = await send(client, sender, to=["grey@example.test"])
    before = clock.now()
    await deliver()
    [row] = await recipient_rows(db, accepted["id"])
    assert row.status == "deferred"
    assert row.next_attempt_at is not None
    wait = row.next_attempt_at - before
    assert timedelta(seconds=115) < wait < timedelta(seconds=130)


async def test_a_throttled_recipient_waits_without_spending_an_attempt(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    settings: Settings,
    redis_url: str,
    db: Database,
) -> None:
    tight = settings.model_copy(
        update={"destination_max_connections": 1, "throttle_wait": timedelta(milliseconds=100)}
    )
    redis = Redis.from_url(redis_url)
    holder, waiter = Runtime(tight, redis=redis), Runtime(tight, redis=redis)
    try:
        first = await send(client, sender, to=["one@example.test"])
        await holder.deliver_message(first["id"])  # its idle connection keeps the only slot
        second = await send(client, sender, to=["two@example.test"])
        await waiter.deliver_message(second["id"])
        [row] = await recipient_rows(db, second["id"])
        assert row.status == "queued"
        assert row.attempt_count == 0
        assert row.next_attempt_at is not None
        assert row.next_attempt_at > clock.now()
        view = await message_view(client, sender, second["id"])
        assert view["recipients"][0]["attempts"] == []
        assert [e["type"] for e in view["recipients"][0]["events"]] == ["processed"]
    finally:
        await holder.close()
        await waiter.close()
        await redis.aclose()
    assert len(mx.messages) == 1


async def test_the_sweeper_enqueues_what_redis_lost(
    client: httpx.AsyncClient,
    sender: Sender,
    mx: ScriptedMX,
    deliver: Deliver,
    redis_url: str,
    db: Database,
) -> None:
    accepted = await send(client, sender, to=[f"lost{i}@example.test" for i in range(3)])
    redis = Redis.from_url(redis_url)
    await redis.flushall()  # every queued job is gone
    await redis.aclose()
    await deliver()  # the burst worker's sweeper finds the recipients in the database
    await mx.wait_for(1)
    assert {r.status for r in await recipient_rows(db, accepted["id"])} == {"delivered"}


async def test_accepted_while_redis_is_down_is_still_delivered(
    sender: Sender,
    mx: ScriptedMX,
    settings: Settings,
    deliver: Deliver,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.support import ApiServer

    offline = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with ApiServer.running(offline) as server, httpx.AsyncClient(base_url=server.url) as http:
        accepted = [await send(http, sender, to=[f"patient{i}@example.test"]) for i in range(3)]
    await deliver()
    await mx.wait_for(3)
    for one in accepted:
        [row] = await recipient_rows(db, one["id"])
        assert row.status == "delivered"
    # The outage is logged, but not once per request (app/core/throttled_log.py).
    for warning in ("rate limit not checked", "could not wake the workers"):
        assert sum(warning in r.getMessage() for r in caplog.records) <= 1, warning


async def test_hard_bounce_suppresses_the_address_for_the_account(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mx.reply_at("RCPT", 550, "5.1.1 <gone@example.test>: Recipient address rejected: User unknown")
    await send(client, sender, to=["gone@example.test"])
    await deliver()
    again = await send(client, sender, to=["Gone@example.test"])
    assert again["recipients"][0]["status"] == "dropped"


async def test_block_bounce_does_not_suppress(
    client: httpx.AsyncClient, sender: Sender, mx: ScriptedMX, deliver: Deliver
) -> None:
    mx.reply_at(
        "RCPT", 554, "5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org"
    )
    first = await send(client, sender, to=["blocked@example.test"])
    await deliver()
    view = await message_view(client, sender, first["id"])
    assert view["recipients"][0]["status"] == "bounced"
    again = await send(client, sender, to=["blocked@example.test"])
    assert again["recipients"][0]["status"] == "queued"
    listed = await client.get("/v3/suppression/blocks", headers=sender.headers)
    assert [entry["email"] for entry in listed.json()] == ["blocked@example.test"]


async def test_an_unknown_domain_lands_on_the_invalid_list(
    client: httpx.AsyncClient, sender: Sender, deliver: Deliver
) -> None:
    await send(client, sender, to=["someone@no-such-domain.test"])
    await deliver()
    again = await send(client, sender, to=["someone@no-such-domain.test"])
    assert again["recipients"][0]["status"] == "dropped"
    listed = await client.get("/v3/suppression/invalid_emails", headers=sender.headers)
    assert [entry["email"] for entry in listed.json()] == ["someone@no-such-domain.test"]


async def test_cancelled_or_final_recipients_are_never_claimed(
    client: httpx.AsyncClient, sender: Sender, db: Database
) -> None:
    accepted = await send(client, sender, to=["a@example.test", "b@example.test"])
    async with db.session() as session:
        await session.execute(
            update(Recipient)
            .where(Recipient.email == "a@example.test")
            .values(status="cancelled", next_attempt_at=None)
        )
        await session.commit()
        claim = await dispatch.claim(session, message_id=accepted["id"], lease=timedelta(minutes=1))
        await session.commit()
    assert [r.email for r in claim.recipients] == ["b@example.test"]
