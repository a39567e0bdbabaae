"""Retry decisions: backoff with jitter, server hints, and giving up (RFC 5321 §4.5.4.1)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.delivery.replies import Reply
from app.delivery.retry import RetryPolicy, decide, retry_hint

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SCHEDULE = (timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=20), timedelta(hours=1))
POLICY = RetryPolicy(SCHEDULE, max_age=timedelta(days=5))
BUSY = Reply(450, "mailbox busy", "4.2.1")


def wait_after(attempts: int, rng: random.Random) -> timedelta:
    """How long a deferral after the `attempts`-th attempt waits."""
    decision = decide(
        BUSY, attempts_made=attempts, accepted_at=NOW, now=NOW, policy=POLICY, rng=rng
    )
    assert decision.status == "deferred"
    assert decision.next_attempt_at is not None
    return decision.next_attempt_at - NOW


def test_waits_follow_the_schedule_grow_and_are_jittered() -> None:
    rng = random.Random(7)
    waits = [wait_after(attempt, rng) for attempt in range(1, 7)]
    assert waits[0] >= SCHEDULE[0] * 0.9  # the first retry is never early (beyond jitter)
    for wait, base in zip(waits, [*SCHEDULE, SCHEDULE[-1], SCHEDULE[-1]], strict=True):
        assert base * 0.9 <= wait <= base * 1.1
    assert waits[1] > waits[0]
    assert waits[3] > waits[2]
    assert len({wait_after(1, rng) for _ in range(20)}) > 1  # jitter spreads retries


def test_successes_and_permanent_failures_are_final() -> None:
    ok = decide(Reply(250, "ok"), attempts_made=1, accepted_at=NOW, now=NOW, policy=POLICY)
    gone = decide(
        Reply(550, "no such user", "5.1.1"),
        attempts_made=1,
        accepted_at=NOW,
        now=NOW,
        policy=POLICY,
    )
    assert (ok.status, ok.next_attempt_at) == ("delivered", None)
    assert (gone.status, gone.next_attempt_at) == ("bounced", None)


def test_retries_stop_at_the_maximum_age_with_447() -> None:
    late = NOW + POLICY.max_age
    decision = decide(BUSY, attempts_made=40, accepted_at=NOW, now=late, policy=POLICY)
    assert decision.status == "expired"
    assert decision.reply.enhanced == "4.4.7"
    assert "mailbox busy" in decision.reply.text


def test_the_last_retry_is_at_the_deadline_not_after_it() -> None:
    almost = NOW + POLICY.max_age - timedelta(minutes=1)
    decision = decide(BUSY, attempts_made=40, accepted_at=NOW, now=almost, policy=POLICY)
    assert decision.next_attempt_at == NOW + POLICY.max_age


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.2.0 Greylisted, please try again in 300 seconds", timedelta(seconds=300)),
        ("Try again in 5 minutes", timedelta(minutes=5)),
        ("4.7.0 Please retry after 2 hours", timedelta(hours=2)),
        ("please try again later", None),
    ],
)
def test_retry_hints_are_read_from_the_reply(text: str, expected: timedelta | None) -> None:
    assert retry_hint(Reply(450, text)) == expected


def test_a_hint_is_honoured_within_bounds() -> None:
    soon = Reply(450, "try again in 5 seconds")
    hours = Reply(450, "try again in 6 hours")
    early = decide(soon, attempts_made=1, accepted_at=NOW, now=NOW, policy=POLICY)
    late = decide(hours, attempts_made=1, accepted_at=NOW, now=NOW, policy=POLICY)
    assert early.next_attempt_at == NOW + timedelta(seconds=30)  # never hammer a server
    assert late.next_attempt_at == NOW + max(SCHEDULE)  # never wait longer than the schedule
