"""The SMTP client against scripted MX hosts: a test per rule of RFC 5321 that delivery obeys."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
import pytest_asyncio
import trustme
from redis.asyncio import Redis

from app.delivery.mx import Destination, MXHost
from app.delivery.outbound import deliver
from app.delivery.pool import ConnectionPool, Throttled
from app.delivery.smtp import Envelope, SmtpOptions
from app.delivery.throttle import DestinationKey, DestinationLimits, DestinationThrottle
from tests.fakes.mx import ScriptedMX

StartMX = Callable[..., Awaitable[ScriptedMX]]
MESSAGE = (
    b"From: a@sender.test\r\nTo: x@example.test\r\nSubject: hi\r\n"
    b"Message-ID: <m1@test>\r\n\r\nHello\r\n.starts with a dot\r\n"
)
KEY = DestinationKey("mx:test", DestinationLimits(max_connections=5))


def destination(*hosts: tuple[str, str]) -> Destination:
    """A destination of (name, ip) hosts in the given order."""
    return Destination(
        domain="example.test",
        hosts=tuple(MXHost(name, 10 * i, (ip,)) for i, (name, ip) in enumerate(hosts, 1)),
    )


def envelope(*recipients: str, data: bytes = MESSAGE, smtputf8: bool = False) -> Envelope:
    """An envelope from a@sender.test."""
    return Envelope("a@sender.test", recipients or ("x@example.test",), data, smtputf8)


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A Redis client for the throttle."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def options(mx_port: int) -> SmtpOptions:
    """Short timeouts so stall tests stay quick."""
    return SmtpOptions(
        port=mx_port, helo_name="mta.columba.test", connect_timeout=1, greeting_timeout=1,
        command_timeout=1,
        data_timeout=2, max_recipients=100,
    )  # fmt: skip


@pytest_asyncio.fixture
async def pool(options: SmtpOptions, redis: Redis) -> AsyncIterator[ConnectionPool]:
    """A pool with a Redis-backed throttle."""
    connections = ConnectionPool(options, throttle=DestinationThrottle(redis), slot_wait=0.3)
    yield connections
    await connections.close()


async def test_250_delivers_and_keeps_body_byte_for_byte(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2")
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert result.replies["x@example.test"].code == 250
    [received] = mx.messages
    assert received.data == MESSAGE  # dot-stuffed on the wire, unstuffed by the server


async def test_rcpt_replies_apply_per_recipient(start_mx: StartMX, pool: ConnectionPool) -> None:
    mx = await start_mx("127.0.0.2")
    mx.reply_at("RCPT", 450, "4.2.1 try later", to="busy@example.test")
    mx.reply_at("RCPT", 550, "5.1.1 no such user", to="gone@example.test")
    result = await deliver(
        destination(("mx1", "127.0.0.2")),
        envelope("busy@example.test", "gone@example.test", "ok@example.test"),
        pool,
        KEY,
    )
    codes = {email: reply.code for email, reply in result.replies.items()}
    assert codes == {"busy@example.test": 450, "gone@example.test": 550, "ok@example.test": 250}
    assert result.replies["gone@example.test"].stage == "RCPT"
    assert [m.rcpt_tos for m in mx.messages] == [["ok@example.test"]]


@pytest.mark.parametrize(
    ("stage", "code"),
    [("MAIL", 451), ("MAIL", 550), ("DATA", 451), ("DATA", 554), ("EOD", 452), ("EOD", 554)],
)
async def test_mail_and_data_replies_apply_to_every_recipient(
    start_mx: StartMX, pool: ConnectionPool, stage: str, code: int
) -> None:
    mx = await start_mx("127.0.0.2")
    mx.reply_at(stage, code, f"{code // 100}.0.0 scripted")
    result = await deliver(
        destination(("mx1", "127.0.0.2")), envelope("a@example.test", "b@example.test"), pool, KEY
    )
    assert {reply.code for reply in result.replies.values()} == {code}
    assert mx.messages == []


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA", "EOD"])
async def test_dropped_connection_counts_as_451(
    start_mx: StartMX, pool: ConnectionPool, stage: str
) -> None:
    mx = await start_mx("127.0.0.2")
    mx.drop_at(stage)
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    reply = result.replies["x@example.test"]
    assert (reply.code, reply.enhanced) == (451, "4.4.2")


async def test_a_stalled_server_times_out_as_451(start_mx: StartMX, pool: ConnectionPool) -> None:
    mx = await start_mx("127.0.0.2")
    mx.stall_at("RCPT", 3)
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    reply = result.replies["x@example.test"]
    assert reply.code == 451
    assert "timed out" in reply.text


async def test_452_too_many_recipients_sends_the_rest_in_a_follow_up(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2")
    mx.reply_at("RCPT", 452, "4.5.3 Too many recipients", to="c@example.test", times=1)
    recipients = ("a@example.test", "b@example.test", "c@example.test", "d@example.test")
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(*recipients), pool, KEY)
    assert {reply.code for reply in result.replies.values()} == {250}
    assert [m.rcpt_tos for m in mx.messages] == [
        ["a@example.test", "b@example.test"],
        ["c@example.test", "d@example.test"],
    ]


async def test_recipients_beyond_the_limit_go_in_further_transactions(
    start_mx: StartMX, options: SmtpOptions, redis: Redis
) -> None:
    mx = await start_mx("127.0.0.2")
    connections = ConnectionPool(
        replace(options, max_recipients=2), throttle=DestinationThrottle(redis)
    )
    try:
        recipients = tuple(f"r{i}@example.test" for i in range(5))
        result = await deliver(
            destination(("mx1", "127.0.0.2")), envelope(*recipients), connections, KEY
        )
    finally:
        await connections.close()
    assert len(result.replies) == 5
    assert [len(m.rcpt_tos) for m in mx.messages] == [2, 2, 1]
    assert mx.sessions == 1


async def test_ehlo_refused_falls_back_to_helo(start_mx: StartMX, pool: ConnectionPool) -> None:
    mx = await start_mx("127.0.0.2")
    mx.ehlo_refused = True
    mx.size_limit = 10_000
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert result.replies["x@example.test"].code == 250
    [received] = mx.messages
    assert received.mail_options == []  # no ESMTP parameters after HELO
    assert received.helo == "mta.columba.test"


async def test_size_is_declared_and_an_oversize_message_fails_before_data(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2")
    mx.size_limit = 100_000
    await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert mx.messages[0].mail_options == [f"SIZE={len(MESSAGE)}"]
    mx.reset()
    mx.size_limit = 50
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    reply = result.replies["x@example.test"]
    assert (reply.code, reply.enhanced) == (552, "5.3.4")
    assert mx.transactions == 0


async def test_smtputf8_message_goes_only_to_a_host_that_supports_it(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    plain = await start_mx("127.0.0.2")
    plain.advertise_smtputf8 = False
    capable = await start_mx("127.0.0.3")
    data = "From: a@sender.test\r\nTo: usér@example.test\r\n\r\nHi\r\n".encode()
    hosts = destination(("mx1", "127.0.0.2"), ("mx2", "127.0.0.3"))
    result = await deliver(
        hosts, envelope("usér@example.test", data=data, smtputf8=True), pool, KEY
    )
    assert result.replies["usér@example.test"].code == 250
    assert plain.messages == []
    assert "SMTPUTF8" in capable.messages[0].mail_options


async def test_idn_domains_go_as_a_labels_to_a_host_without_smtputf8(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2")
    mx.advertise_smtputf8 = False
    sent = Envelope("bounces@bücher.example", ("user@bücher.example",), MESSAGE)
    result = await deliver(destination(("mx1", "127.0.0.2")), sent, pool, KEY)
    assert result.replies["user@bücher.example"].code == 250  # replies keep the stored address
    [received] = mx.messages
    assert received.mail_from == "bounces@xn--bcher-kva.example"
    assert received.rcpt_tos == ["user@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in received.mail_options


async def test_smtputf8_message_fails_567_when_no_host_supports_it(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2")
    mx.advertise_smtputf8 = False
    data = b"From: a@sender.test\r\n\r\nHi\r\n"
    result = await deliver(
        destination(("mx1", "127.0.0.2")),
        envelope("usér@example.test", data=data, smtputf8=True),
        pool,
        KEY,
    )
    reply = result.replies["usér@example.test"]
    assert reply.enhanced == "5.6.7"
    assert reply.is_permanent


async def test_421_defers_and_closes_the_connection(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2")
    mx.reply_at("MAIL", 421, "4.7.0 Try again later, closing connection", times=1)
    first = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert first.replies["x@example.test"].code == 421
    second = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert second.replies["x@example.test"].code == 250
    assert mx.sessions == 2  # the 421 connection was not reused


async def test_unreachable_or_refusing_hosts_fall_through_to_the_next(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    busy = await start_mx("127.0.0.3")
    busy.reply_at("CONNECT", 421, "4.3.2 busy")
    good = await start_mx("127.0.0.4")
    hosts = destination(("down", "127.0.0.2"), ("busy", "127.0.0.3"), ("good", "127.0.0.4"))
    result = await deliver(hosts, envelope(), pool, KEY)
    assert result.mx_host == "good"
    assert len(good.messages) == 1


async def test_a_refused_starttls_continues_in_plaintext(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2", tls=True)
    mx.refuse_starttls()  # offered, then answered 454 (RFC 3207 §4)
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert result.replies["x@example.test"].code == 250
    assert result.tls_version is None
    assert mx.messages[0].tls is False


async def test_a_failed_tls_handshake_falls_back_to_plaintext(
    start_mx: StartMX, pool: ConnectionPool, tls_ca: trustme.CA
) -> None:
    mx = await start_mx("127.0.0.2", tls=True)
    assert mx.tls_context is not None
    # Demanding a client certificate we do not have makes every handshake fail.
    mx.tls_context.verify_mode = ssl.CERT_REQUIRED
    tls_ca.configure_trust(mx.tls_context)
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert result.replies["x@example.test"].code == 250
    assert result.tls_version is None
    # The validating try (the test CA is not trusted here), the opportunistic one, both
    # failing their handshakes, then plaintext.
    assert mx.sessions == 3


async def test_starttls_is_used_when_offered(start_mx: StartMX, pool: ConnectionPool) -> None:
    mx = await start_mx("127.0.0.2", tls=True)
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert result.tls_version is not None
    assert result.tls_version.startswith("TLSv1")
    assert mx.messages[0].tls


async def test_connections_are_reused_between_messages(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2")
    for _ in range(5):
        await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert len(mx.messages) == 5
    assert mx.sessions == 1


async def test_connection_closed_after_max_messages(
    start_mx: StartMX, options: SmtpOptions, redis: Redis
) -> None:
    mx = await start_mx("127.0.0.2")
    connections = ConnectionPool(options, throttle=DestinationThrottle(redis), max_messages=2)
    try:
        for _ in range(5):
            await deliver(destination(("mx1", "127.0.0.2")), envelope(), connections, KEY)
    finally:
        await connections.close()
    assert mx.sessions == 3


async def test_idle_connections_are_closed_by_the_reaper(
    start_mx: StartMX, options: SmtpOptions, redis: Redis
) -> None:
    mx = await start_mx("127.0.0.2")
    connections = ConnectionPool(options, throttle=DestinationThrottle(redis), idle_timeout=0.0)
    try:
        await deliver(destination(("mx1", "127.0.0.2")), envelope(), connections, KEY)
        assert await connections.reap() == 1
        await deliver(destination(("mx1", "127.0.0.2")), envelope(), connections, KEY)
    finally:
        await connections.close()
    assert mx.sessions == 2


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    mx = await start_mx("127.0.0.2")
    await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    mx.drop_at("MAIL", times=1)  # the server hangs up on the reused connection
    result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert result.replies["x@example.test"].code == 250
    assert len(mx.messages) == 2


async def test_connection_limit_is_shared_across_pools(
    start_mx: StartMX, options: SmtpOptions, redis: Redis
) -> None:
    await start_mx("127.0.0.2")
    one = DestinationKey("mx:one-slot", DestinationLimits(max_connections=1))
    first = ConnectionPool(options, throttle=DestinationThrottle(redis), slot_wait=0.2)
    second = ConnectionPool(options, throttle=DestinationThrottle(redis), slot_wait=0.2)
    try:
        await deliver(destination(("mx1", "127.0.0.2")), envelope(), first, one)  # keeps it idle
        with pytest.raises(Throttled):
            await deliver(destination(("mx1", "127.0.0.2")), envelope(), second, one)
        await first.close()  # frees the slot
        result = await deliver(destination(("mx1", "127.0.0.2")), envelope(), second, one)
        assert result.replies["x@example.test"].code == 250
    finally:
        await first.close()
        await second.close()


async def test_message_rate_is_limited_per_destination(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    await start_mx("127.0.0.2")
    slow = DestinationKey("mx:slow", DestinationLimits(max_connections=5, rate=0.2, burst=2))
    for _ in range(2):
        await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, slow)
    with pytest.raises(Throttled) as raised:
        await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, slow)
    assert 1 < raised.value.retry_after <= 5


async def test_a_421_deferral_halves_the_destination_budget(
    start_mx: StartMX, pool: ConnectionPool, redis: Redis
) -> None:
    mx = await start_mx("127.0.0.2")
    mx.reply_at("RCPT", 421, "4.7.0 [TSS04] Messages temporarily deferred due to user complaints")
    throttle = DestinationThrottle(redis)
    assert await throttle.factor(KEY) == 1.0
    await deliver(destination(("mx1", "127.0.0.2")), envelope(), pool, KEY)
    assert await throttle.factor(KEY) == 0.5


async def test_a_slow_greeting_times_out_and_the_next_host_is_tried(
    start_mx: StartMX, pool: ConnectionPool
) -> None:
    slow = await start_mx("127.0.0.2")
    slow.stall_at("CONNECT", 3)  # longer than the greeting timeout
    good = await start_mx("127.0.0.3")
    result = await deliver(
        destination(("slow", "127.0.0.2"), ("good", "127.0.0.3")), envelope(), pool, KEY
    )
    assert result.mx_host == "good"
    assert len(good.messages) == 1
