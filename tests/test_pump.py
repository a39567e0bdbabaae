"""The worker's pump when recording outcomes fails: what reached an MX is never left to a
lease running out (which would deliver it again), and one result the database refuses does
not hold back the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from app.delivery.replies import synthetic
from app.delivery.retry import Decision
from app.messages.dispatch import Claim, ClaimedRecipient, Outcome
from worker.pump import SPLIT_AFTER_FAILURES, Emit, Pump, PumpSettings, Released

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def recipient(index: int, token: str = "t1") -> ClaimedRecipient:
    """A claimed recipient."""
    return ClaimedRecipient(
        id=f"r{index}",
        message_id=f"m{index}",
        account_id="a",
        email=f"r{index}@example.test",
        domain="example.test",
        attempt_count=0,
        personalization=None,
        token=token,
    )


def delivered(claimed: ClaimedRecipient) -> Outcome:
    """A delivery outcome."""
    decision = Decision("delivered", synthetic(250, "2.0.0", "OK"))
    return Outcome(recipient=claimed, decision=decision, started_at=NOW, duration_ms=1)


class Refused(Exception):
    """The database refused a transaction for what it holds (bad data, not an outage)."""


class Database:
    """What the pump's callables write to, failing when told to."""

    def __init__(self, recipients: Sequence[ClaimedRecipient]) -> None:
        self.due = list(recipients)
        self.recorded: list[str] = []
        self.handed_back: list[str] = []
        self.renewals: list[list[str]] = []
        self.down = False  # every transaction fails: the server is unreachable
        self.down_for_calls = 0  # the next this many transactions fail so
        self.refused: set[str] = set()  # results that make their transaction fail
        self.record_calls = 0

    async def claim(self, limit: int, last_chances: int) -> Claim:
        taken, self.due = self.due[:limit], self.due[limit:]
        return Claim("t1", tuple(taken))

    async def process(self, recipients: Sequence[ClaimedRecipient], emit: Emit) -> None:
        emit([delivered(r) for r in recipients], [])

    async def record(self, outcomes: list[Outcome], released: list[Released]) -> int:
        self.record_calls += 1
        if self.down or self.record_calls <= self.down_for_calls:
            raise ConnectionRefusedError(111, "Connection refused")
        if {o.recipient.id for o in outcomes} & self.refused:
            raise Refused("the database refused the transaction")
        self.recorded += [o.recipient.id for o in outcomes]
        self.handed_back += [r.id for r, _ in released]
        return len(outcomes)

    async def renew(self, tokens: list[str]) -> int:
        self.renewals.append(tokens)
        return len(tokens)


SETTINGS = PumpSettings(
    batch_size=10,
    capacity=10,
    idle_poll=0.05,
    gather=0,
    flush_interval=0,
    lease=timedelta(seconds=0.2),
    record_retry=0.01,
)


@pytest_asyncio.fixture
async def run() -> AsyncIterator[list[Pump]]:
    """Pumps started by a test, stopped after it."""
    pumps: list[Pump] = []
    yield pumps
    for pump in pumps:
        await pump.stop(grace=1)


def started(db: Database, pumps: list[Pump]) -> Pump:
    """A pump over the fake database, started."""
    pump = Pump(
        claim=db.claim, process=db.process, record=db.record, renew=db.renew, settings=SETTINGS
    )
    pumps.append(pump)
    pump.start()
    return pump


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Poll a callable until it is true."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (a fake's state, polled)
            await asyncio.sleep(0.01)


async def test_a_failed_group_commit_is_retried_with_its_leases_kept(run: list[Pump]) -> None:
    db = Database([recipient(i) for i in range(5)])
    db.down = True
    pump = started(db, run)
    await until(lambda: db.record_calls >= 2 and len(db.renewals) >= 2)
    assert pump.in_flight == 5  # still tracked: its leases are renewed, not left to run out
    assert all(tokens == ["t1"] for tokens in db.renewals)
    db.down = False
    await until(lambda: not db.due and pump.in_flight == 0)
    assert sorted(db.recorded) == [f"r{i}" for i in range(5)]


async def test_a_result_the_database_refuses_does_not_hold_back_the_others(
    run: list[Pump],
) -> None:
    db = Database([recipient(i) for i in range(5)])
    db.refused = {"r3"}
    pump = started(db, run)
    await until(lambda: not db.due and pump.in_flight == 0)
    assert sorted(db.recorded) == ["r0", "r1", "r2", "r4"]
    assert db.record_calls == SPLIT_AFTER_FAILURES + 5  # group tries, then one at a time


async def test_results_are_kept_while_every_single_one_fails_too(run: list[Pump]) -> None:
    db = Database([recipient(i) for i in range(3)])
    db.down = True
    pump = started(db, run)
    await until(lambda: db.record_calls >= SPLIT_AFTER_FAILURES + 3 * 2)
    assert pump.in_flight == 3  # a database outage is not bad data: nothing given up
    db.down = False
    await until(lambda: not db.due and pump.in_flight == 0)
    assert sorted(db.recorded) == ["r0", "r1", "r2"]


async def test_results_are_not_given_up_as_the_database_comes_back(run: list[Pump]) -> None:
    """Issue 17: after three failed group commits the results went one by one, and those that
    failed while PostgreSQL came back (the first ones) were given up to their leases, to be
    delivered again. An outage now keeps them whole until the group commit lands."""
    db = Database([recipient(i) for i in range(5)])
    db.down_for_calls = SPLIT_AFTER_FAILURES + 1
    pump = started(db, run)
    await until(lambda: not db.due and pump.in_flight == 0)
    assert sorted(db.recorded) == [f"r{i}" for i in range(5)]
    assert db.record_calls == SPLIT_AFTER_FAILURES + 2  # one group commit lands at last


@pytest.mark.parametrize("down_for", [0.0, 0.05])
async def test_every_result_is_recorded_exactly_once(run: list[Pump], down_for: float) -> None:
    db = Database([recipient(i) for i in range(25)])
    db.down = down_for > 0
    pump = started(db, run)
    await asyncio.sleep(down_for)
    db.down = False
    await until(lambda: not db.due and pump.in_flight == 0)
    assert sorted(db.recorded) == sorted(f"r{i}" for i in range(25))


class SlowDatabase(Database):
    """Deliveries that take `seconds` each (a slow MX); claims that take `claim_seconds`."""

    def __init__(
        self, recipients: Sequence[ClaimedRecipient], seconds: float, claim_seconds: float = 0
    ) -> None:
        super().__init__(recipients)
        self.seconds = seconds
        self.claim_seconds = claim_seconds
        self.started = asyncio.Event()

    async def claim(self, limit: int, last_chances: int) -> Claim:
        await asyncio.sleep(self.claim_seconds)
        return await super().claim(limit, last_chances)

    async def process(self, recipients: Sequence[ClaimedRecipient], emit: Emit) -> None:
        self.started.set()
        await asyncio.sleep(self.seconds)
        await super().process(recipients, emit)


async def test_stop_lets_a_delivery_in_flight_finish_within_the_grace_period(
    run: list[Pump],
) -> None:
    db = SlowDatabase([recipient(i) for i in range(3)], seconds=0.3)
    pump = started(db, run)
    await db.started.wait()
    began = asyncio.get_running_loop().time()
    await pump.stop(grace=5)
    took = asyncio.get_running_loop().time() - began
    assert sorted(db.recorded) == ["r0", "r1", "r2"]
    assert db.handed_back == []
    assert took < 2  # it ended when the delivery did, not at the end of the grace period
    assert pump.in_flight == 0


async def test_stop_hands_back_what_outlives_the_grace_period(run: list[Pump]) -> None:
    db = SlowDatabase([recipient(i) for i in range(3)], seconds=3600)
    pump = started(db, run)
    await db.started.wait()
    began = asyncio.get_running_loop().time()
    await pump.stop(grace=0.2)
    took = asyncio.get_running_loop().time() - began
    assert db.recorded == []
    assert sorted(db.handed_back) == ["r0", "r1", "r2"]
    assert 0.2 <= took < 2
    assert pump.in_flight == 0


async def test_a_claim_under_way_at_stop_is_handed_back_not_lost(run: list[Pump]) -> None:
    db = SlowDatabase([recipient(i) for i in range(3)], seconds=0, claim_seconds=0.2)
    pump = started(db, run)
    await asyncio.sleep(0.05)  # inside the first claim's transaction
    await pump.stop(grace=5)
    assert db.recorded == []
    assert sorted(db.handed_back) == ["r0", "r1", "r2"]
    assert pump.in_flight == 0
