"""The delivery pump of one worker process: claims due recipients in batches, delivers them
concurrently, and records outcomes in group commits.

Three loops share the work. The claimer leases up to `batch_size` due recipients whenever
fewer than `capacity` are in flight, and sleeps until woken (an arq job, after every
accepted send) or until `idle_poll` passes. Each claimed batch is delivered by a task of
its own, so a slow destination holds only its own recipients. The recorder gathers outcomes
from every task and writes them in one transaction per `flush_interval`, which keeps the
database cost per message small under load; a group commit that fails (a deadlock, a
failover, the server out of connections) is tried again, with backoff, until it lands: the
mail is already at its MX, and letting the leases run out would send it twice. The renewer
extends the leases of everything in flight, or waiting to be recorded, so a long SMTP
exchange (or a database outage) is never mistaken for a dead worker.

On shutdown (`stop`) the claimer stops at once; recipients claimed but not yet in an SMTP
transaction are handed back by the processor (worker/runtime.py) as they reach it, for another
worker to claim at once; transactions under way get `grace` seconds to end, and those still
running then are cut off and their recipients handed back too; the recorder writes every
outcome and hand-back before the pump stops.

A recipient on its last chance (workers died while they had it, one short of the bound at
which dispatch.claim drops it) gets the pump's attention alone: at most one is in flight, so
that if this process dies on it too, it is the only one to reach the bound, not other
recipients that happened to be in flight with it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.core import clock
from app.core.db import database_unavailable
from app.messages.dispatch import Claim, ClaimedRecipient, Outcome

log = logging.getLogger(__name__)

Released = tuple[ClaimedRecipient, datetime]
SPLIT_AFTER_FAILURES = 3  # group commits in a row refused (not an outage): then one by one
Emit = Callable[[list[Outcome], list[Released]], None]  # hands results to the recorder
Processor = Callable[[Sequence[ClaimedRecipient], Emit], Awaitable[None]]
FLUSH_SECONDS = 10.0  # after the grace period, how long shutdown waits for the last records


@dataclass
class PumpSettings:
    """How much a process takes on at once."""

    capacity: int = 500
    batch_size: int = 100
    idle_poll: float = 5.0
    gather: float = 0.005
    flush_interval: float = 0.01
    lease: timedelta = timedelta(minutes=15)
    record_retry: float = 0.5  # first wait after a failed group commit; doubles up to 8×


@dataclass
class Results:
    """Outcomes and hand-backs waiting to be recorded."""

    outcomes: list[Outcome] = field(default_factory=list)
    released: list[Released] = field(default_factory=list)

    def emit(self, outcomes: list[Outcome], released: list[Released]) -> None:
        """Add what one transaction (or refusal) produced."""
        self.outcomes.extend(outcomes)
        self.released.extend(released)

    def __len__(self) -> int:
        return len(self.outcomes) + len(self.released)

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.released)

    def absorb(self, other: Results) -> None:
        """Take another's results in (a failed group commit rejoins the next)."""
        self.emit(other.outcomes, other.released)


class Pump:
    """Claim → deliver → record, continuously, within a bounded amount of work in flight."""

    def __init__(
        self,
        *,
        claim: Callable[[int, int], Awaitable[Claim]],
        process: Processor,
        record: Callable[[list[Outcome], list[Released]], Awaitable[int]],
        renew: Callable[[list[str]], Awaitable[int]],
        settings: PumpSettings,
    ) -> None:
        self._claim, self._process, self._record, self._renew = claim, process, record, renew
        self.settings = settings
        self.in_flight = 0
        self.last_chances_in_flight = 0
        self.empty_claims = 0
        self._tokens: Counter[str] = Counter()
        self._pending = Results()
        self._state = asyncio.Condition()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.stopping = False  # set by stop(): nothing new is claimed or started
        self._claiming = False  # a claim's transaction is under way: not to be cancelled

    def start(self) -> None:
        """Run the claimer, recorder and renewer."""
        if not self._loops:
            self._loops = [
                asyncio.create_task(self._claimer()),
                asyncio.create_task(self._recorder()),
                asyncio.create_task(self._renewer()),
            ]

    def wake(self) -> None:
        """There may be due work: claim now rather than at the next idle poll."""
        self._wake.set()

    async def _changed(self) -> None:
        async with self._state:
            self._state.notify_all()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self._state:
            await self._state.wait_for(predicate)

    async def _claimer(self) -> None:
        while not self.stopping:
            await self._wait_for(lambda: self._has_room() or self.stopping)
            if self.stopping:
                return
            room = self.settings.capacity - self.in_flight
            last_chances = 0 if self.last_chances_in_flight else 1
            # Cleared before claiming: a signal that arrives during the claim (for rows it
            # may not have seen) makes the next wait return at once.
            self._wake.clear()
            self._claiming = True
            try:
                claim = await self._claim(min(self.settings.batch_size, room), last_chances)
            except Exception:
                log.exception("claiming due recipients failed; retrying")
                await asyncio.sleep(1)
                continue
            finally:
                self._claiming = False
            if not claim.recipients:
                self.empty_claims += 1
                await self._changed()
                await self._idle()
                continue
            self._track(claim)
            if self.stopping:  # stop() came during the claim: these go straight back
                self._hand_back(claim.recipients)
                return
            task = asyncio.create_task(self._deliver(claim))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    def _track(self, claim: Claim) -> None:
        """Count a claim's recipients as in flight and its lease as ours to renew."""
        self.in_flight += len(claim.recipients)
        self.last_chances_in_flight += sum(r.last_chance for r in claim.recipients)
        self._tokens[claim.token] += len(claim.recipients)

    def _hand_back(self, recipients: Sequence[ClaimedRecipient]) -> None:
        """Give recipients back unattempted, due now, for another worker to claim."""
        if recipients:
            now = clock.now()
            self._pending.emit([], [(recipient, now) for recipient in recipients])
            self._notify_soon()

    def _has_room(self) -> bool:
        """Room for a whole batch (or nothing in flight): claims stay batch-sized when a
        backlog drains, rather than one recipient per outcome recorded."""
        wanted = min(self.settings.batch_size, self.settings.capacity)
        return self.settings.capacity - self.in_flight >= wanted or self.in_flight == 0

    async def _idle(self) -> None:
        """Until woken or `idle_poll` passes; then gather the wake-ups of the next few
        milliseconds, so that messages trickling in are claimed together."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.settings.idle_poll)
        if self.settings.gather > 0:
            await asyncio.sleep(self.settings.gather)

    async def _deliver(self, claim: Claim) -> None:
        """Deliver one claim; on an unexpected error its leases simply run out and the
        recipients are claimed again later (nothing is lost, nothing is marked failed)."""
        handled: set[str] = set()

        def emit(outcomes: list[Outcome], released: list[Released]) -> None:
            self._pending.emit(outcomes, released)
            handled.update([o.recipient.id for o in outcomes] + [r.id for r, _ in released])
            self._notify_soon()

        try:
            await self._process(claim.recipients, emit)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            # Shutdown's grace period ran out: the transactions still under way were cut
            # off. Their recipients go back without an attempt counted; an MX that had
            # already taken the DATA will get the message again (the in-flight window).
            self._hand_back([r for r in claim.recipients if r.id not in handled])
            return
        except Exception:
            log.exception("delivering a batch of %d recipient(s) failed", len(claim.recipients))
        self._forget([r for r in claim.recipients if r.id not in handled])
        await self._changed()

    def _notify_soon(self) -> None:
        """Wake the recorder from synchronous code."""
        task = asyncio.create_task(self._changed())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, recipients: Sequence[ClaimedRecipient]) -> None:
        """Stop tracking recipients that will not be recorded by us."""
        last_chances = sum(r.last_chance for r in recipients)
        self.in_flight -= len(recipients)
        self.last_chances_in_flight -= last_chances
        if last_chances and not self.last_chances_in_flight:
            self.wake()  # another may be waiting: do not leave it to the idle poll
        for recipient in recipients:
            self._tokens[recipient.token] -= 1
        self._tokens += Counter()  # drop tokens that reached zero

    async def _recorder(self) -> None:
        failures = refusals = 0  # failed commits in a row; those of them not an outage
        while True:
            await self._wait_for(lambda: len(self._pending) > 0)
            await asyncio.sleep(self.settings.flush_interval)  # let a group commit gather
            batch, self._pending = self._pending, Results()
            try:
                if refusals >= SPLIT_AFTER_FAILURES:
                    batch = await self._record_apart(batch)
                else:
                    await self._record(batch.outcomes, batch.released)
                    self._forget_results(batch)
                    batch = Results()
            except Exception as exc:
                log.exception("recording %d outcome(s) failed", len(batch))
                # An outage is no reason to split: one by one would only be slower to catch
                # up once the database is back, and give up what fails as it comes back.
                if not database_unavailable(exc):
                    refusals += 1
            if batch:
                # Kept, with their leases renewed, and tried again: these recipients' mail
                # is at its MX already, so letting the leases run out would deliver it twice.
                # Fencing by lease token makes a retry after a commit whose acknowledgement
                # was lost write nothing twice.
                failures += 1
                batch.absorb(self._pending)
                self._pending = batch
                await asyncio.sleep(self.settings.record_retry * 2 ** min(failures - 1, 3))
                continue
            failures = refusals = 0
            await self._changed()

    async def _record_apart(self, batch: Results) -> Results:
        """Record each result in a transaction of its own, after group commits kept failing:
        one result the database refuses must not hold every other back. Those that fail
        while others succeed are given up (their leases run out and they are attempted
        again); if all fail, the database is down rather than the data bad: all are kept."""
        singles = [Results([o], []) for o in batch.outcomes]
        singles += [Results([], [r]) for r in batch.released]
        failed: list[Results] = []
        for number, single in enumerate(singles):
            try:
                await self._record(single.outcomes, single.released)
            except Exception as exc:
                log.exception("recording one outcome failed")
                if database_unavailable(exc):  # not this result's fault: keep the rest
                    return _joined([*failed, *singles[number:]])
                failed.append(single)
                continue
            self._forget_results(single)
        if len(failed) == len(singles):
            return batch
        for single in failed:
            log.error("giving up recording %s: its lease will run out", _names(single))
            self._forget_results(single)
        return Results()

    def _forget_results(self, results: Results) -> None:
        """Stop tracking what a group commit recorded (or gave up)."""
        self._forget([o.recipient for o in results.outcomes] + [r for r, _ in results.released])

    async def _renewer(self) -> None:
        interval = self.settings.lease.total_seconds() / 4  # three renewals may be late
        while True:
            await asyncio.sleep(interval)
            tokens = list(self._tokens)
            if tokens:
                try:
                    await self._renew(tokens)
                except Exception:
                    log.exception("renewing %d lease(s) failed", len(tokens))

    async def drain(self) -> None:
        """Until nothing is in flight and a claim made after that found nothing due."""
        while True:
            await self._wait_for(lambda: self.in_flight == 0)
            seen = self.empty_claims
            self.wake()
            await self._wait_for(self._claimed_since(seen))
            if self.in_flight == 0 and self.empty_claims > seen:
                return

    def _claimed_since(self, seen: int) -> Callable[[], bool]:
        """True once a claim after `seen` empty ones found nothing, or work was taken."""
        return lambda: self.empty_claims > seen or self.in_flight > 0

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming at once; give deliveries in flight `grace` seconds to end (the
        processor hands back what has not started); cut off those still running and hand
        their recipients back; record everything; then stop."""
        if not self._loops:
            return
        claimer, recorder, renewer = self._loops
        self.stopping = True
        self.wake()
        await self._changed()
        deadline = asyncio.get_running_loop().time() + grace
        if not self._claiming:  # a claim under way must return its rows to be handed back
            claimer.cancel()
        await asyncio.wait([claimer], timeout=grace)
        remaining = deadline - asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_for(self._settled), max(0.0, remaining))
        cut_off = [task for task in self._deliveries if not task.done()]
        if cut_off:
            log.warning("grace period over: %d delivery task(s) cut off", len(cut_off))
        for task in cut_off:
            task.cancel()
        await asyncio.gather(*cut_off, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_for(lambda: self.in_flight == 0), FLUSH_SECONDS)
        if self.in_flight:
            log.error(
                "stopping with %d recipient(s) unrecorded: their leases will run out",
                self.in_flight,
            )
        for loop in (claimer, recorder, renewer, *self._tasks):
            loop.cancel()
        await asyncio.gather(claimer, recorder, renewer, *self._tasks, return_exceptions=True)
        self._loops = []

    def _settled(self) -> bool:
        """Nothing in flight: every delivery ended and what it produced is recorded."""
        return self.in_flight == 0 and not any(not t.done() for t in self._deliveries)


def _names(results: Results) -> str:
    """Which recipient a single result is about, for the log."""
    recipients = [o.recipient for o in results.outcomes] + [r for r, _ in results.released]
    return ", ".join(f"recipient {r.id} of message {r.message_id}" for r in recipients)


def _joined(parts: Sequence[Results]) -> Results:
    """The results of several parts, as one."""
    joined = Results()
    for part in parts:
        joined.absorb(part)
    return joined
