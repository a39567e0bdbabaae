"""Deliver one envelope to a destination: the first MX host that takes the transaction,
over a pooled connection, within the destination's limits (RFC 5321 §5.1)."""

from __future__ import annotations

import asyncio

from app.delivery.mx import Destination, MXHost
from app.delivery.pool import ConnectionPool, PooledSession, Throttled
from app.delivery.replies import Reply, synthetic
from app.delivery.smtp import (
    Envelope,
    HostUnusable,
    TlsResult,
    TransactionResult,
    check_extensions,
    send_envelope,
)
from app.delivery.throttle import DestinationKey, asks_to_slow_down
from app.delivery.tls_policy import (
    OPPORTUNISTIC,
    TlsRequirement,
    allowed_hosts,
    no_host_allowed,
    report_result,
    session_failure,
)

MAX_RATE_WAIT = 1.0  # wait this long for the rate limit in-process; longer waits are handed back
STALE_RETRIES = 2  # pooled connections the server closed while idle, tried before a fresh one


def everyone(envelope: Envelope, reply: Reply) -> TransactionResult:
    """The same reply for every recipient (DNS failure, no reachable host)."""
    return TransactionResult(replies={recipient: reply for recipient in envelope.recipients})


class TlsRefused(HostUnusable):
    """The session does not meet the destination's TLS requirement; the next MX may."""


async def deliver(
    destination: Destination,
    envelope: Envelope,
    pool: ConnectionPool,
    key: DestinationKey,
    tls: TlsRequirement = OPPORTUNISTIC,
) -> TransactionResult:
    """Deliver to the first host that takes the transaction, and meets the TLS requirement;
    raises Throttled when the destination's budget is spent, so the caller can wait without
    spending an attempt."""
    if destination.failure is not None:
        return everyone(envelope, destination.failure)
    destination, left = allowed_hosts(destination, tls)
    reports: list[TlsResult] = [
        (host.name, "", "validation-failure", "MX host not in the policy") for host in left
    ]
    last = synthetic(451, "4.4.1", f"no mail host of {destination.domain} could be reached")
    if not destination.hosts:
        last = no_host_allowed(destination.domain, tls, left)
    for host, ip in destination.addresses():
        try:
            result = await _deliver_via(pool, key, host, ip, envelope, tls)
        except TlsRefused as exc:
            last = exc.reply
            reports.append((host.name, ip, report_result(exc.tls, tls), exc.reply.text))
            continue
        except HostUnusable as exc:
            last = exc.reply
            continue
        if result is None:  # SMTPUTF8 unsupported here; RFC 6531: another MX may support it
            last = synthetic(553, "5.6.7", "no mail host supports SMTPUTF8")
            continue
        result.tls_results = [*reports, *result.tls_results]
        return result
    result = everyone(envelope, last)
    result.tls_results = reports
    return result


async def _deliver_via(
    pool: ConnectionPool,
    key: DestinationKey,
    host: MXHost,
    ip: str,
    envelope: Envelope,
    tls: TlsRequirement,
) -> TransactionResult | None:
    """The transaction over one address, retrying once on a fresh connection when a pooled
    one turns out to have been closed by the server while idle."""
    for _ in range(STALE_RETRIES + 1):
        pooled = await pool.checkout(key, host, ip)
        info = pooled.session.tls
        refusal = session_failure(tls, host, info)
        if refusal is not None:
            # The session is fine for destinations without the requirement: keep it.
            await pool.checkin(pooled, reusable=True)
            raise TlsRefused(refusal, info)
        await _respect_rate(pool, pooled, key)
        refusal = check_extensions(pooled.session, envelope)
        if refusal is not None:
            await pool.checkin(pooled, reusable=True)
            if refusal.enhanced == "5.6.7":
                return None
            return everyone(envelope, refusal)
        replies = await send_envelope(pooled.session, envelope, pool.options.max_recipients)
        if pooled.reused and _stale(replies):
            await pool.checkin(pooled, reusable=False)
            continue
        reusable = not any(reply.code == 421 for reply in replies.values())
        await pool.checkin(pooled, reusable=reusable)
        if pool.throttle is not None and any(map(asks_to_slow_down, replies.values())):
            await pool.throttle.slow_down(key)
        result = TransactionResult(replies, host.name, ip, info.version, info.cipher)
        result.tls_verified = info.verified if info.version else None
        if tls.policy_domain is not None:
            result.tls_results = [(host.name, ip, report_result(info, tls), info.error)]
        return result
    raise HostUnusable(synthetic(451, "4.4.2", f"connections to {host.name} [{ip}] keep dropping"))


def _stale(replies: dict[str, Reply]) -> bool:
    """Every recipient lost to a dropped connection before the server said anything."""
    return all(r.enhanced == "4.4.2" and r.stage == "MAIL" for r in replies.values())


async def _respect_rate(pool: ConnectionPool, pooled: PooledSession, key: DestinationKey) -> None:
    """Wait for the destination's message rate; hand long waits back as Throttled."""
    if pool.throttle is None:
        return
    wait = await pool.throttle.rate_wait(key)
    if wait > MAX_RATE_WAIT:
        await pool.checkin(pooled, reusable=True)
        raise Throttled(key, retry_after=wait)
    if wait > 0:
        await asyncio.sleep(wait)
