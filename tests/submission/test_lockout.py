"""AUTH lockouts: per client IP, and per API key and client network, so that someone who
knows a key's public prefix cannot lock its owner out from elsewhere."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.submission.guard import Guard, GuardLimits, client_network
from tests.submission.clients import Listener
from tests.support import Sender

StartSubmission = Callable[..., Awaitable[Listener]]


def log_in(listener: Listener, source: str, key: str) -> int:
    """AUTH from `source`: 235 when it succeeded, else the refusal's code (blocking)."""
    try:
        with listener.smtp(source=source, login=key):
            return 235
    except smtplib.SMTPAuthenticationError as failed:
        return failed.smtp_code
    except smtplib.SMTPServerDisconnected:
        return 421


async def test_failures_with_a_known_prefix_do_not_lock_out_the_owner(
    start_submission: StartSubmission, sender: Sender
) -> None:
    listener = await start_submission(
        submission_auth_max_failures=100, submission_auth_max_key_failures=3
    )
    wrong = sender.key[:-4] + "AAAA"  # the owner's public prefix, a guessed secret
    attackers = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.6")
    for source in attackers:
        codes = [await asyncio.to_thread(log_in, listener, source, wrong) for _ in range(3)]
        assert codes == [535, 535, 535]
    # 12 failures from 4 addresses: the owner, from an address of their own, still logs in.
    assert await asyncio.to_thread(log_in, listener, "127.0.0.5", sender.key) == 235
    assert await asyncio.to_thread(log_in, listener, "127.0.0.5", sender.key) == 235
    # Where the failures came from, the key is locked, even with the right secret
    # (RFC 4954 §6: 454 4.7.0), so guessing there has stopped.
    for source in attackers:
        assert await asyncio.to_thread(log_in, listener, source, sender.key) == 454


async def test_an_address_that_keeps_failing_is_locked_out_for_every_key(
    start_submission: StartSubmission, sender: Sender
) -> None:
    listener = await start_submission(
        submission_auth_max_failures=2, submission_auth_max_key_failures=10
    )
    wrong = sender.key[:-4] + "AAAA"
    assert await asyncio.to_thread(log_in, listener, "127.0.0.7", wrong) == 535
    assert await asyncio.to_thread(log_in, listener, "127.0.0.7", wrong) == 421  # the IP lockout
    assert await asyncio.to_thread(log_in, listener, "127.0.0.8", sender.key) == 235


@pytest_asyncio.fixture
async def guard(redis_url: str) -> AsyncIterator[Guard]:
    redis = Redis.from_url(redis_url)
    yield Guard(redis, GuardLimits(max_ip_failures=100, max_key_failures=2, lockout_seconds=60))
    await redis.aclose()


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ],
)
def test_client_networks(ip: str, network: str) -> None:
    assert client_network(ip) == network


async def test_an_ipv6_client_counts_as_its_64(guard: Guard) -> None:
    # One IPv6 client may use any address of its /64: rotating them is no fresh start.
    await guard.auth_failed(ip="2001:db8:0:1::a", key_prefix="p")
    await guard.auth_failed(ip="2001:db8:0:1::b", key_prefix="p")
    assert await guard.key_locked_for("p", ip="2001:db8:0:1::c") == 60
    assert await guard.key_locked_for("p", ip="2001:db8:0:2::a") == 0
    assert await guard.key_locked_for("other", ip="2001:db8:0:1::a") == 0
    # AUTH asks for both lockouts at once: the address itself is not locked, the key is.
    assert await guard.locked_for(ip="2001:db8:0:1::c", key_prefix="p") == (0, 60)
    assert await guard.locked_for(ip="2001:db8:0:1::c", key_prefix=None) == (0, 0)
