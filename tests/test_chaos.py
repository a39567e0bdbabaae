"""Chaos on loopback (issue 17): 10,000 recipients flow through two API processes and the SMTP
submission listener to three workers while PostgreSQL restarts (fast, then immediate), Redis
disappears for 30 seconds and comes back empty, workers and an API process are SIGKILLed, and
the MX hosts answer 421 and then cut connections. Afterwards every recipient of every 202/250
is delivered, nothing arrived twice beyond the in-flight window of the kills, the API answered
503 and the listener 4xx while the database was down, and the event feed, the stats, the
recipients table and the webhook receiver agree.

PostgreSQL and Redis are private instances of this test (it stops them); it runs in
`make test-pg` only. The counts are printed (pytest -s) and written to
var/test-artifacts/chaos.txt."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import trustme
from sqlalchemy import text

from app.core.config import Settings
from app.core.db import Database
from tests.chaos_load import DOMAINS, Answer, Load, plan
from tests.conftest import SECRET_KEY
from tests.fakes.dns import FakeDNS
from tests.fakes.mx import ScriptedMX, free_port
from tests.fakes.webhooks import WebhookReceiver, running_receiver
from tests.fleet import ROOT, Fleet, until_healthy
from tests.servers import PrivatePostgres, PrivateRedis
from tests.support import Sender, create_test_database, make_sender, migrate_database
from tests.test_crash import worker_env

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("COLUMBA_TEST_DATABASE_URL"), reason="the chaos test runs on PostgreSQL"
    ),
    pytest.mark.own_servers,
    pytest.mark.timeout(300),
]

RECIPIENTS = 10_000
PER_SEND = 20
LOAD_SECONDS = 55.0
SETTLE_SECONDS = 90.0
DATABASE_DOWN_SECONDS = 3.0  # PostgreSQL stays stopped this long at each restart
REDIS_DOWN_SECONDS = 30.0  # as issue 17 says
MX_TROUBLE_SECONDS = 8.0  # 421 for this long, then dropped connections for as long
RECORDING_CATCH_UP_SECONDS = 2.0  # after a restart, for the workers' backlog to be recorded
DESTINATION_CONNECTIONS = 8  # COLUMBA_DESTINATION_MAX_CONNECTIONS
WORKERS = 3
HOOK_HOST = "hooks.test"
FINAL = ("delivered", "bounced", "dropped", "expired", "cancelled")
ARTIFACT = ROOT / "var" / "test-artifacts" / "chaos.txt"


@dataclass
class Fault:
    """One fault as it happened: when it began and ended (monotonic), and the window in which
    the database was certainly down (after pg_ctl stop returned, before pg_ctl start)."""

    name: str
    began: float
    ended: float = 0.0
    down: tuple[float, float] | None = None


@dataclass
class Stage:
    """Everything the test runs: private servers, Columba's processes, fakes, the client."""

    postgres: PrivatePostgres
    redis: PrivateRedis
    fleet: Fleet
    database: Database
    sender: Sender
    mx_hosts: list[ScriptedMX]
    receiver: WebhookReceiver
    api_urls: tuple[str, ...]
    smtp_port: int
    smtp_ca: str
    faults: list[Fault] = field(default_factory=list)
    setup_seconds: float = 0.0
    database_up: asyncio.Event = field(default_factory=asyncio.Event)


@pytest_asyncio.fixture
async def postgres() -> AsyncIterator[PrivatePostgres]:
    """A private PostgreSQL cluster, deleted after the test."""
    server = PrivatePostgres()
    await asyncio.to_thread(server.init)
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.destroy)


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[PrivateRedis]:
    """A private redis-server, killed after the test."""
    server = PrivateRedis()
    await server.start()
    yield server
    await server.stop()


def columba_env(settings: Settings, tmp_path: Path, tls: trustme.LeafCert) -> dict[str, str]:
    """The environment of every Columba process: the crash tests' worker environment, with
    retries, leases and sweeps in seconds, no rate limit in the way, and small pools."""
    cert, key = tmp_path / "smtp-cert.pem", tmp_path / "smtp-key.pem"
    tls.cert_chain_pems[0].write_to_path(str(cert))
    tls.private_key_pem.write_to_path(str(key))
    overrides = {
        "VAR_DIR": str(tmp_path / "var"),
        "RETRY_SCHEDULE": "2s",
        "LEASE_DURATION": "20s",  # renewed every 5 s: outages up to 15 s end no live lease
        "DESTINATION_MAX_CONNECTIONS": str(DESTINATION_CONNECTIONS),
        "RATE_LIMIT": "1000000/1m",
        "SUBMISSION_RATE_LIMIT": "1000000",
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "4",
        "SMTP_TLS_CERT": str(cert),
        "SMTP_TLS_KEY": str(key),
    }
    return worker_env(settings) | {f"COLUMBA_{k}": v for k, v in overrides.items()}


@pytest_asyncio.fixture
async def stage(
    postgres: PrivatePostgres,
    redis: PrivateRedis,
    dns_server: FakeDNS,
    mx_port: int,
    start_mx: Callable[..., Awaitable[ScriptedMX]],
    tmp_path: Path,
) -> AsyncIterator[Stage]:
    """The private servers migrated, two MX hosts, a webhook receiver, and Columba's
    processes running: 2 API, 3 workers, the SMTP listener."""
    began = time.monotonic()
    url = await create_test_database(postgres.url, "columba")
    settings = Settings(
        database_url=url,
        redis_url=redis.url,
        secret_key=SECRET_KEY,
        hostname="mta.columba.test",
        dns_nameservers=(dns_server.nameserver,),
        mx_port=mx_port,
        allow_private_destinations=True,
        var_dir=tmp_path / "var",
    )
    ca = trustme.CA()
    fleet = Fleet(columba_env(settings, tmp_path, ca.issue_cert("127.0.0.1")), tmp_path)
    api_ports, smtp_port = [free_port(), free_port()], free_port()
    # Started before the migrations, which run while the processes start (a few seconds of
    # CPU each): until then, the workers' claims fail and are retried.
    for number, port in enumerate(api_ports):
        fleet.start(f"api{number}", "api", "--port", str(port))
    for number in range(WORKERS):
        fleet.start(f"worker{number}", "worker")
    fleet.start("smtp", "smtp", "--host", "127.0.0.1", "--port", str(smtp_port), "--tls-port", "0")
    api_urls = tuple(f"http://127.0.0.1:{port}" for port in api_ports)
    database = Database(settings)
    try:
        await migrate_database(url)
        sender = await make_sender(database, dns_server, settings, account="acme",
                                   domain="sender.test")  # fmt: skip
        mx_hosts = []
        for number, domain in enumerate(DOMAINS, start=2):
            dns_server.add_mx(domain, (10, f"mx.{domain}"))
            dns_server.add_a(f"mx.{domain}", f"127.0.0.{number}")
            mx_hosts.append(await start_mx(f"127.0.0.{number}"))
        dns_server.add_a(HOOK_HOST, "127.0.0.7")
        async with running_receiver("127.0.0.7") as receiver:
            for api_url in api_urls:
                await until_healthy(api_url)
            stage = Stage(
                postgres, redis, fleet, database, sender, mx_hosts, receiver, api_urls,
                smtp_port, ca.cert_pem.bytes().decode(),
            )  # fmt: skip
            await subscribe_webhook(stage)
            stage.setup_seconds = time.monotonic() - began
            yield stage
            await fleet.stop_all(kill=True)  # graceful stops are tests/test_rolling_restart's
    finally:
        await fleet.stop_all(kill=True)
        fleet.print_logs()
        print(f"--- postgres server log ---\n{postgres.log_tail()}")
        await database.dispose()


async def subscribe_webhook(stage: Stage) -> None:
    """A webhook for every event type, at the receiver."""
    url = f"http://{HOOK_HOST}:{stage.receiver.port}/hooks"
    async with httpx.AsyncClient(base_url=stage.api_urls[0], timeout=30) as http:
        response = await http.post("/v1/webhooks", json={"url": url}, headers=stage.sender.headers)
    assert response.status_code == 201, response.text


# --- faults ----------------------------------------------------------------------------------


async def restart_postgres(stage: Stage, mode: str) -> None:
    """pg_ctl stop -m `mode`, DATABASE_DOWN_SECONDS of nothing, pg_ctl start."""
    fault = Fault(f"PostgreSQL restart -m {mode}", time.monotonic())
    stage.faults.append(fault)
    stage.database_up.clear()
    await asyncio.to_thread(stage.postgres.stop, mode)
    stopped = time.monotonic()
    await asyncio.sleep(DATABASE_DOWN_SECONDS)
    fault.down = (stopped, time.monotonic())
    await asyncio.to_thread(stage.postgres.start)
    fault.ended = time.monotonic()
    await asyncio.sleep(RECORDING_CATCH_UP_SECONDS)
    stage.database_up.set()


async def lose_redis(stage: Stage) -> None:
    """Redis gone for REDIS_DOWN_SECONDS, then a fresh, empty server on the same port."""
    fault = Fault("Redis down, back empty", time.monotonic())
    stage.faults.append(fault)
    await stage.redis.stop()
    await asyncio.sleep(REDIS_DOWN_SECONDS)
    await stage.redis.start()
    fault.ended = time.monotonic()


async def kill_and_restart(stage: Stage, name: str) -> None:
    """SIGKILL a process, start it again. Not while PostgreSQL is down or has just come back:
    a worker keeps what it delivered meanwhile until it can record it, so a kill then re-sends
    all of that (README: the duplicate window lasts the outage), beyond the in-flight bound
    this test checks."""
    await stage.database_up.wait()
    fault = Fault(f"SIGKILL {name}", time.monotonic())
    stage.faults.append(fault)
    await stage.fleet.kill(name)
    stage.fleet.start(name)
    fault.ended = time.monotonic()


async def mx_trouble(stage: Stage) -> None:
    """Every MX answers 421 at connection, then cuts connections in the middle of DATA."""
    for name in ("MX 421 at connect", "MX drops mid-DATA"):
        fault = Fault(name, time.monotonic())
        stage.faults.append(fault)
        for mx in stage.mx_hosts:
            if name.startswith("MX 421"):
                mx.reply_at("CONNECT", 421, "4.3.2 Busy, try later")
            else:
                mx.drop_at("DATA")
        await asyncio.sleep(MX_TROUBLE_SECONDS)
        for mx in stage.mx_hosts:
            mx.clear_rules()
        fault.ended = time.monotonic()


async def chaos(stage: Stage, randomness: random.Random) -> None:
    """The faults, at their moments of the load (seconds after it starts), overlapping: the
    Redis outage spans an API kill, a worker kill and the MX trouble. The kills come at a
    random moment within a second or two of their slot."""
    start = time.monotonic()
    stage.database_up.set()

    async def at(offset: float, fault: Awaitable[None]) -> None:
        await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
        await fault

    def jitter(offset: float) -> float:
        return offset + randomness.uniform(0, 2)

    await asyncio.gather(
        at(jitter(3), kill_and_restart(stage, "worker0")),
        at(7, restart_postgres(stage, "fast")),
        at(13, lose_redis(stage)),
        at(jitter(17), kill_and_restart(stage, "api0")),
        at(20, mx_trouble(stage)),
        at(jitter(26), kill_and_restart(stage, "worker1")),
        at(40, restart_postgres(stage, "immediate")),
        at(jitter(48), kill_and_restart(stage, "worker2")),
    )


# --- looking at the outcome ------------------------------------------------------------------


async def scalar(database: Database, sql: str, **params: object) -> int:
    """One number from the database."""
    async with database.session() as session:
        return int(await session.scalar(text(sql), params) or 0)


async def statuses(database: Database) -> Counter[str]:
    """Recipients by status."""
    async with database.session() as session:
        rows = await session.execute(text("SELECT status, count(*) FROM recipients GROUP BY 1"))
        return Counter({status: count for status, count in rows})


async def event_ids(database: Database) -> set[int]:
    """Every event's id."""
    async with database.session() as session:
        return set((await session.scalars(text("SELECT id FROM events"))).all())


def webhook_ids(receiver: WebhookReceiver) -> dict[int, set[str]]:
    """Each event id the receiver accepted, with the webhook-id headers that carried it."""
    carried: dict[int, set[str]] = defaultdict(set)
    for request in receiver.accepted:
        for item in request.json()["data"]:
            carried[int(item["id"])].add(request.headers["webhook-id"])
    return carried


async def settle(stage: Stage) -> float:
    """Until every recipient is final and the receiver has every event, at most
    SETTLE_SECONDS (the checks then say what is missing); seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < SETTLE_SECONDS:
        counts = await statuses(stage.database)
        pending = sum(n for status, n in counts.items() if status not in FINAL)
        if not pending and await event_ids(stage.database) <= set(webhook_ids(stage.receiver)):
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - began


async def watch_loop_lag(lags: list[float]) -> None:
    """Record how late this loop wakes up (it serves the MX hosts, DNS and the receiver: a
    late loop looks like a slow network to Columba)."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.1)
        lags.append(time.monotonic() - before - 0.1)


async def feed_count(stage: Stage, event_type: str) -> int:
    """Events of a type in GET /v1/events, page after page."""
    count, after = 0, None
    async with httpx.AsyncClient(base_url=stage.api_urls[1], timeout=30) as http:
        while True:
            params: dict[str, str | int] = {"type": event_type, "limit": 1000}
            if after is not None:
                params["after"] = after
            response = await http.get("/v1/events", params=params, headers=stage.sender.headers)
            assert response.status_code == 200, response.text
            page = response.json()
            count += len(page["events"])
            after = page["next_cursor"]
            if not page["events"]:
                return count


async def stats_delivered(stage: Stage, since: datetime) -> int:
    """`delivered` in GET /v1/stats since the test began."""
    day = (since - timedelta(days=1)).date().isoformat()  # a run across midnight counts too
    async with httpx.AsyncClient(base_url=stage.api_urls[1], timeout=30) as http:
        response = await http.get("/v1/stats", params={"start": day}, headers=stage.sender.headers)
    assert response.status_code == 200, response.text
    return int(response.json()["totals"]["delivered"])


def resends(mx_hosts: list[ScriptedMX]) -> tuple[Counter[str], list[tuple[float, float]]]:
    """Copies per address at the MX hosts, and for each transaction that re-sent an address
    that had already arrived (one cut by a kill after the MX took it), when the first copy
    and the re-sent one arrived."""
    copies: Counter[str] = Counter()
    first: dict[str, float] = {}
    repeated = []
    messages = sorted((m for mx in mx_hosts for m in mx.messages), key=lambda m: m.received_at)
    for message in messages:
        earlier = [first[address] for address in message.rcpt_tos if address in first]
        if earlier:
            repeated.append((min(earlier), message.received_at))
        for address in message.rcpt_tos:
            first.setdefault(address, message.received_at)
        copies.update(message.rcpt_tos)
    return copies, repeated


async def stored_addresses(database: Database) -> set[str]:
    """Every stored recipient's address."""
    async with database.session() as session:
        return set((await session.scalars(text("SELECT email FROM recipients"))).all())


def stored_unpromised(answers: list[Answer], stored: set[str]) -> Counter[str]:
    """Recipients stored although their request was not answered 202/250, by its answer:
    only requests that got no answer (an API process killed after its commit) may be."""
    answer_of = {address: a for a in answers for address in a.send.addresses}
    return Counter(
        answer_of[address].label
        for address in stored
        if not answer_of[address].accepted or address in answer_of[address].refused
    )


async def not_delivered(database: Database) -> list[tuple[str, str, str | None]]:
    """Recipients in any other state than delivered, with their last reply."""
    async with database.session() as session:
        rows = await session.execute(
            text("SELECT email, status, last_response FROM recipients WHERE status <> 'delivered'")
        )
        return [(email, status, response) for email, status, response in rows]


async def recipients_of(database: Database, message_ids: list[str]) -> dict[str, set[str]]:
    """The stored recipients' addresses of each message."""
    found: dict[str, set[str]] = defaultdict(set)
    async with database.session() as session:
        rows = await session.execute(
            text("SELECT message_id, email FROM recipients WHERE message_id = ANY(:ids)"),
            {"ids": message_ids},
        )
        for message_id, email in rows:
            found[message_id].add(email)
    return found


def in_down_windows(stage: Stage, answers: list[Answer], channels: set[str]) -> list[Answer]:
    """Answers of these channels asked and answered while the database was down."""
    windows = [fault.down for fault in stage.faults if fault.down is not None]
    return [
        answer
        for answer in answers
        if answer.send.channel in channels and any(answer.within(*w) for w in windows)
    ]


def report(lines: list[str]) -> None:
    """Print the summary and keep it in var/test-artifacts/chaos.txt."""
    text_ = "\n".join(lines)
    print(f"\n{text_}")
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(text_ + "\n")


# --- the test --------------------------------------------------------------------------------


async def test_nothing_is_lost_under_chaos(stage: Stage) -> None:
    began, since = time.monotonic(), datetime.now(UTC)
    lags: list[float] = []
    watcher = asyncio.create_task(watch_loop_lag(lags))
    load = Load(stage.api_urls, stage.smtp_port, stage.smtp_ca, stage.sender.key,
                stage.sender.address())  # fmt: skip
    await asyncio.gather(
        load.run(plan(RECIPIENTS, PER_SEND), LOAD_SECONDS), chaos(stage, random.Random(17))
    )
    loaded = time.monotonic()
    await stage.database.dispose()  # the test's own connections died with the restarts
    settled = await settle(stage)
    watcher.cancel()

    accepted = load.accepted()
    stored = await recipients_of(stage.database, [a.message_id for a in accepted if a.message_id])
    counts = await statuses(stage.database)
    copies, resent = resends(stage.mx_hosts)
    repeated = len(resent)
    others = await not_delivered(stage.database)
    unpromised = stored_unpromised(load.answers, await stored_addresses(stage.database))
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    delivered = counts["delivered"]
    events_delivered = await scalar(
        stage.database, "SELECT count(*) FROM events WHERE type = 'delivered'"
    )
    feed_delivered = await feed_count(stage, "delivered")
    stats = await stats_delivered(stage, since)
    hooks = webhook_ids(stage.receiver)
    all_events = await event_ids(stage.database)
    down_api = in_down_windows(stage, load.answers, {"v1", "v3"})
    down_smtp = in_down_windows(stage, load.answers, {"smtp"})
    worker_kills = sum(1 for name, _ in stage.fleet.kills if name.startswith("worker"))
    bound = worker_kills * DESTINATION_CONNECTIONS * len(DOMAINS)

    lines = ["== chaos test (issue 17) =="]
    lines += [f"answers {label}: {n}" for label, n in sorted(load.counts().items())]
    lines += [
        f"recipients sent: {RECIPIENTS}; accepted (202/250): "
        f"{sum(len(a.send.addresses) - len(a.refused) for a in accepted)}",
        f"recipients stored by status: {dict(sorted(counts.items()))}",
        f"stored although not accepted, by the answer: {dict(unpromised)}",
        f"delivered: {delivered}; distinct addresses at the MX hosts: {len(copies)}; "
        f"duplicate copies: {duplicates} in {repeated} re-sent transactions "
        f"(bound {bound} = {worker_kills} worker kills × {DESTINATION_CONNECTIONS} connections "
        f"× {len(DOMAINS)} destinations)",
        f"delivered events: table {events_delivered}, feed {feed_delivered}, stats {stats}",
        f"events: {len(all_events)}; webhook posts: {len(stage.receiver.requests)} "
        f"({len(stage.receiver.accepted)} accepted), distinct events received {len(hooks)}, "
        f"carried by more than one webhook id: {sum(1 for ids in hooks.values() if len(ids) > 1)}",
        f"while the database was down: API {dict(Counter(a.label for a in down_api))}, "
        f"SMTP {dict(Counter(a.label for a in down_smtp))}",
    ]
    lines += [f"not delivered: {email} {status}: {reply}" for email, status, reply in others[:10]]
    lines += [f"sample of {label}: {error}" for label, error in sorted(load.samples().items())]
    lines += [
        "re-sent transactions by when the first copy arrived (s into the load: count): "
        + str(sorted(Counter(int(t0 - began) // 2 * 2 for t0, _ in resent).items()))
    ]
    lines += [
        f"fault {f.name}: {f.ended - f.began:.1f} s, at {f.began - began:.1f} s"
        for f in stage.faults
    ]
    lines += [
        f"setup {stage.setup_seconds:.1f} s, load {loaded - began:.1f} s, "
        f"settled in {settled:.1f} s, the test's loop late by up to {max(lags):.2f} s, "
        f"processes that died on their own: {stage.fleet.died() or 'none'}"
    ]
    report(lines)

    # Every 202/250 is stored in full and every stored recipient reached a final state.
    for answer in accepted:
        assert answer.message_id is not None
        expected = set(answer.send.addresses) - set(answer.refused)
        assert stored[answer.message_id] == expected, answer
    assert set(counts) <= {"delivered"}, counts  # nothing here should bounce or be dropped
    assert all(label.split()[1] == "error" for label in unpromised), unpromised
    # Delivered means at the MX, at least once; twice only within the kills' in-flight window.
    delivered_addresses = {a for s in stored.values() for a in s}
    assert delivered_addresses <= set(copies)
    assert len(copies) == delivered
    assert repeated <= bound
    # The database down: 503 from the API and 4xx from the listener, never 202/250 or 500.
    assert down_api, "no API request fell inside a database outage"
    assert {a.code for a in down_api} == {503}, Counter(a.label for a in down_api)
    assert down_smtp, "no SMTP transaction fell inside a database outage"
    assert all(400 <= a.code < 500 for a in down_smtp), Counter(a.label for a in down_smtp)
    assert not [a for a in load.answers if a.code >= 500 and a.code != 503], load.counts()
    # The feed, the stats and the recipients table agree; the webhook got every event.
    assert events_delivered == feed_delivered == stats == delivered
    assert all_events <= set(hooks)
    assert all(len(ids) == 1 for ids in hooks.values())
    assert not stage.fleet.died()
