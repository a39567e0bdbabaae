"""What one worker process holds: settings, database, resolver, signing keys, SMTP pool and
the delivery pump.

Delivering a batch is: load the messages → render and sign each recipient's copy → send
each group of identical copies to its destination → turn replies into outcomes. The steps
live in app.messages (database, composition) and app.delivery (DNS, SMTP, limits); this
module strings them together, and worker/pump.py keeps batches flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import dns.asyncresolver
from redis.asyncio import Redis
from sqlalchemy.exc import DBAPIError

from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.core.queue import WAKE_CHANNEL
from app.delivery.idn import needs_smtputf8
from app.delivery.mta_sts import Fetcher, MtaSts, PolicyError
from app.delivery.mx import Destination, relay_destination, resolve_destination
from app.delivery.outbound import deliver
from app.delivery.pool import Closing, ConnectionPool, Throttled
from app.delivery.replies import Reply, synthetic
from app.delivery.resolver import make_resolver, resolve_host
from app.delivery.retry import Decision, RetryPolicy, decide
from app.delivery.signing import DkimSigner
from app.delivery.smtp import Envelope, SmtpOptions, TransactionResult
from app.delivery.throttle import DestinationKey, DestinationThrottle, destination_key
from app.delivery.tls_policy import OPPORTUNISTIC, DestinationTable, TlsLevel, TlsRequirement
from app.domains.service import dkim_keys
from app.messages import dispatch
from app.messages.compose import Composer, Copy, Refused, return_path
from app.messages.dispatch import Claim, ClaimedRecipient, LoadedMessage, Outcome
from app.observability import delivery as observed
from app.templates.budget import render_limits
from app.tlspolicy.store import DatabasePolicyStore, TlsCounter
from app.tracking.links import LinkSettings
from worker import wakeups
from worker.pump import Emit, Pump, PumpSettings, Released, Results

log = logging.getLogger(__name__)

T = TypeVar("T")
MESSAGE_CACHE_SECONDS = 60.0  # messages do not change; this only bounds how long one is kept


class Runtime:
    """Long-lived per-process state of a worker."""

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self._listener: asyncio.Task[None] | None = None
        self._shutdown: asyncio.Task[None] | None = None
        # No pre-ping (a round trip per transaction): a connection found dead is retried
        # once instead (`_retrying`).
        self.db = Database(settings, pool_pre_ping=False)
        self.messages = dispatch.MessageCache(
            ttl=MESSAGE_CACHE_SECONDS, max_bytes=settings.worker_message_cache_mb * 1024 * 1024
        )
        self.resolver: dns.asyncresolver.Resolver = make_resolver(
            settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds()
        )
        self.retry_policy = RetryPolicy(settings.retry_schedule, settings.max_message_age)
        self._signers: dict[tuple[str, ...], observed.TimedSigner] = {}
        self.destination_table = DestinationTable(settings.destination_tls)
        self.mta_sts = MtaSts(
            self.resolver, policy_fetcher(settings, self.resolver), DatabasePolicyStore(self.db)
        )
        self.tls_counter = TlsCounter()
        self._attempt_log_level = logging.INFO if settings.log_format == "json" else logging.DEBUG
        self.composer = Composer(
            self.signer,
            render_limits(settings),
            LinkSettings(settings.public_url, settings.secret_key_bytes()),
        )
        self.pool = ConnectionPool(
            smtp_options(settings),
            throttle=DestinationThrottle(redis) if redis is not None else None,
            idle_timeout=settings.smtp_idle_timeout.total_seconds(),
            max_messages=settings.smtp_max_messages_per_connection,
            slot_wait=settings.throttle_wait.total_seconds(),
            observer=observed.PoolMetrics(),
        )
        self.pump = Pump(
            claim=lambda limit, last_chances: self.claim(limit, last_chances=last_chances),
            process=self.process,
            record=self.record,
            renew=self.renew,
            settings=PumpSettings(
                capacity=settings.worker_capacity,
                batch_size=settings.worker_batch_size,
                idle_poll=settings.sweep_interval.total_seconds(),
                gather=settings.worker_claim_gather_ms / 1000,
                lease=settings.lease_duration,
            ),
        )

    def start(self) -> None:
        """Begin delivering, closing idle connections and listening for wake-ups."""
        self.pool.start()
        self.pump.start()
        if self.redis is not None and self._listener is None:
            self._listener = asyncio.create_task(wakeups.listen(self.redis, self.wake))

    def wake(self) -> None:
        """New work may be due."""
        self.pump.wake()

    async def drain(self) -> None:
        """Until everything due now is delivered and recorded."""
        await self.pump.drain()

    @property
    def stopping(self) -> bool:
        """Shutting down: nothing new is claimed, and no new SMTP transaction starts."""
        return self.pump.stopping

    def begin_shutdown(self) -> None:
        """SIGTERM: stop claiming and starting transactions now; those under way get
        SHUTDOWN_GRACE to end, everything else goes back at once (close() waits for it)."""
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._wind_down())

    async def _wind_down(self) -> None:
        grace = self.settings.shutdown_grace.total_seconds()
        began = time.perf_counter()
        log.info("stopping: %d recipient(s) in hand, grace %.0fs", self.pump.in_flight, grace)
        stop = asyncio.create_task(self.pump.stop(grace))  # sets `stopping` first of all
        await self.pool.stop_lending()  # checkouts waiting for a slot give up now
        await stop
        log.info("delivery stopped after %.2fs", time.perf_counter() - began)

    async def close(self) -> None:
        """Wind down (see begin_shutdown), then QUIT SMTP connections and close the
        database pool."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        self.begin_shutdown()
        assert self._shutdown is not None
        await self._shutdown
        await self.pool.close()
        try:
            await self.flush_tls_counts()
        except Exception:  # statistics only: never keep a worker from stopping
            log.exception("could not save the TLS-RPT counters")
        await self.db.dispose()

    async def flush_tls_counts(self) -> int:
        """Add the TLS-RPT counters gathered here to the database."""
        async with self.db.session() as session:
            rows = await self.tls_counter.flush(session)
            await session.commit()
        return rows

    async def claim(
        self, limit: int, *, last_chances: int | None = None, message_id: str | None = None
    ) -> Claim:
        """Lease up to `limit` due recipients, at most `last_chances` of them on their last
        chance (see dispatch.claim); drop those that keep killing workers. Their messages
        are loaded (into the cache) in the same transaction."""

        async def attempt() -> Claim:
            async with self.db.session() as session:
                claim = await dispatch.claim(
                    session,
                    lease=self.settings.lease_duration,
                    limit=limit,
                    message_id=message_id,
                    max_expiries=self.settings.max_lease_expiries,
                    last_chances=last_chances,
                )
                if claim.recipients:
                    try:
                        await self.messages.load(session, _message_ids(claim.recipients))
                    except Exception:  # delivering loads them again (or leaves the leases)
                        log.exception("loading claimed messages failed")
                await session.commit()
            return claim

        return await _retrying(attempt)

    async def record(self, outcomes: list[Outcome], released: list[Released]) -> int:
        """Outcomes and hand-backs in one transaction (a group commit). Retrying is safe:
        a first try that did commit cleared the leases, which fence the second out."""

        async def attempt() -> int:
            async with self.db.session() as session:
                recorded = await dispatch.record_and_release(
                    session, outcomes=outcomes, released=released
                )
                await session.commit()
            return recorded

        recorded = await _retrying(attempt)
        observed.observe_outcomes(outcomes, now=clock.now())
        observed.log_attempts(outcomes, level=self._attempt_log_level)
        if released and self.stopping:
            await self._wake_others(len(released))
        return recorded

    async def _wake_others(self, count: int) -> None:
        """Tell the other workers that handed-back recipients are due now, rather than
        leave them to the next idle poll."""
        if self.redis is None:
            return
        try:
            await self.redis.publish(WAKE_CHANNEL, count)
        except Exception as exc:  # their idle polls and the sweeper find the work anyway
            log.warning("could not wake the other workers: %s", exc)

    async def renew(self, tokens: list[str]) -> int:
        """Extend the leases of claims still in flight."""

        async def attempt() -> int:
            async with self.db.session() as session:
                renewed = await dispatch.renew_leases(
                    session, tokens=tokens, lease=self.settings.lease_duration
                )
                await session.commit()
            return renewed

        return await _retrying(attempt)

    async def deliver_message(self, message_id: str) -> int:
        """Deliver one message's due recipients now, outside the pump; returns outcomes."""
        total = 0
        while (claim := await self.claim(1000, message_id=message_id)).recipients:
            results = Results()
            await self.process(claim.recipients, results.emit)
            total += await self.record(results.outcomes, results.released)
        return total

    async def sweep(self) -> bool:
        """Whether any recipient is due (the sweeper then wakes the workers)."""
        async with self.db.session() as session:
            return await dispatch.any_due(session)

    async def process(self, recipients: Sequence[ClaimedRecipient], emit: Emit) -> None:
        """Deliver a batch; each transaction's outcomes are emitted as soon as it ends, so
        they are recorded without waiting for the slowest destination of the batch."""
        message_ids = _message_ids(recipients)
        loaded = {mid: m for mid in message_ids if (m := self.messages.get(mid)) is not None}
        if len(loaded) < len(message_ids):  # claimed long ago, or the cache is full
            async with self.db.session() as session:
                loaded = await self.messages.load(session, message_ids)
        by_message: dict[str, list[ClaimedRecipient]] = defaultdict(list)
        for recipient in recipients:
            by_message[recipient.message_id].append(recipient)
        await asyncio.gather(
            *(self._message(loaded[mid], batch, emit) for mid, batch in by_message.items())
        )

    async def _message(
        self, loaded: LoadedMessage, recipients: list[ClaimedRecipient], emit: Emit
    ) -> None:
        """One message's recipients: compose their copies, deliver each group."""
        started = clock.now()
        if self.stopping:
            emit([], [(r, started) for r in recipients])
            return
        held = self._held(loaded)
        if held is not None:
            emit([self._outcome(r, held, loaded, started, 0) for r in recipients], [])
            return
        try:
            prepared = self.composer.copies(loaded, recipients)
        except Exception as exc:  # a bad key or content must not leave recipients leased
            log.exception("cannot render or sign message %s", loaded.message.id)
            reply = synthetic(451, "4.3.0", f"local error preparing the message: {exc}")
            emit([self._outcome(r, reply, loaded, started, 0) for r in recipients], [])
            return
        refused = [_refused(item, started) for item in prepared if isinstance(item, Refused)]
        if refused:
            emit(refused, [])
        groups = group_copies([item for item in prepared if isinstance(item, Copy)])
        await asyncio.gather(*(self._deliver_group(g, loaded, emit) for g in groups))

    async def _deliver_group(self, group: list[Copy], loaded: LoadedMessage, emit: Emit) -> None:
        """One transaction's worth of identical copies to one domain."""
        started, began = clock.now(), time.perf_counter()
        leader = group[0]
        emails = tuple(copy.recipient.email for copy in group)
        mail_from = return_path(
            loaded, leader.recipient, secret_key=self.settings.secret_key_bytes()
        )
        envelope = Envelope(
            mail_from=mail_from,
            recipients=emails,
            data=leader.data,
            # RFC 6531 §3.2: only a non-ASCII local part needs it; domains go as A-labels.
            smtputf8=leader.smtputf8 or any(map(needs_smtputf8, (mail_from, *emails))),
        )
        destination = await self.destination(leader.recipient.domain)
        requirement, failure = await self.tls_requirement(leader.recipient.domain)
        key = self.throttle_key(destination)
        try:
            if self.stopping:
                raise Closing(key)
            result = await deliver(destination, envelope, self.pool, key, requirement)
        except Closing:
            log.info("shutting down: %d recipient(s) handed back", len(group))
            emit([], [(copy.recipient, clock.now()) for copy in group])
            return
        except Throttled as exc:
            retry_at = clock.now() + timedelta(seconds=exc.retry_after)
            log.info("%s throttled; %d recipient(s) wait", exc.destination.name, len(group))
            emit([], [(copy.recipient, retry_at) for copy in group])
            return
        self._observe_tls(leader.recipient.domain, requirement, failure, result)
        elapsed = int((time.perf_counter() - began) * 1000)
        outcomes = [
            self._outcome(
                c.recipient, _reply_for(result, c.recipient.email), loaded, started, elapsed, result
            )
            for c in group
        ]
        emit(outcomes, [])

    def _outcome(
        self,
        recipient: ClaimedRecipient,
        reply: Reply,
        loaded: LoadedMessage,
        started: datetime,
        duration_ms: int,
        result: TransactionResult | None = None,
    ) -> Outcome:
        decision = decide(
            reply,
            attempts_made=recipient.attempt_count + 1,
            accepted_at=loaded.message.created_at,
            now=clock.now(),
            policy=self.retry_policy,
        )
        return Outcome(
            recipient=recipient,
            decision=decision,
            started_at=started,
            duration_ms=duration_ms,
            mx_host=result.mx_host if result else None,
            ip=result.ip if result else None,
            tls_version=result.tls_version if result else None,
            categories=tuple(loaded.message.categories or ()),
            tls_cipher=result.tls_cipher if result else None,
            tls_verified=result.tls_verified if result else None,
            asm_group_id=loaded.message.asm_group_id,
            accepted_at=loaded.message.created_at,
            request_id=loaded.message.request_id,
        )

    def _held(self, loaded: LoadedMessage) -> Reply | None:
        """A deferral while the sending domain is not verified (its DKIM record failed a
        check) and verified domains are required: mail signed with a key that does not
        verify would land in spam, so it waits (up to MAX_MESSAGE_AGE) for the fix."""
        domain = loaded.domain
        if not self.settings.require_verified_domains or domain.verified_at is not None:
            return None
        return synthetic(
            451,
            "4.7.0",
            f"the sending domain {domain.name} is not verified (a DKIM record it signs with "
            f"is missing or wrong): held until `columba domains verify {domain.name}` passes",
            stage="LOCAL",
        )

    async def tls_requirement(self, domain: str) -> tuple[TlsRequirement, PolicyError | None]:
        """What TLS a delivery to `domain` needs: the receiver's enforced MTA-STS policy,
        else the destination table's entry, else the policy in testing mode (reported,
        not enforced) or opportunistic TLS. A relay gets only the table's entry."""
        table = self.destination_table.requirement_for(domain)
        if self.settings.relay is not None or not self.settings.mta_sts:
            return table or OPPORTUNISTIC, None
        policy, failure = await self.mta_sts.requirement(domain)
        if table is not None and table.level is not TlsLevel.MAY and not policy.enforced:
            return table, failure
        return policy, failure

    def _observe_tls(
        self,
        domain: str,
        requirement: TlsRequirement,
        failure: PolicyError | None,
        result: TransactionResult,
    ) -> None:
        """Count the delivery's TLS sessions for TLS-RPT (RFC 8460)."""
        if requirement.policy_domain is None and failure is None:
            return
        cached = self.mta_sts.memory.get(domain.lower())
        text = cached.policy.text if cached is not None else None
        self.tls_counter.observe(domain, requirement, failure, result.tls_results, text)

    async def destination(self, domain: str) -> Destination:
        """The relay when one is configured, else the domain's MX hosts."""
        relay = self.settings.relay
        if relay is not None:
            return relay_destination(relay.host, await resolve_host(self.resolver, relay.host))
        return await resolve_destination(
            self.resolver, domain, allow_private=self.settings.allow_private_destinations
        )

    def throttle_key(self, destination: Destination) -> DestinationKey:
        """Which budget a destination spends: its MX host set (or its provider)."""
        return destination_key(
            [host.name for host in destination.hosts] or [destination.domain],
            self.settings.destination_limits,
        )

    def signer(self, loaded: LoadedMessage) -> observed.TimedSigner:
        """The sending domain's signer, its key decrypted once per process."""
        domain = loaded.domain
        # Keyed by the selectors too: after a DKIM rotation the new key signs at once.
        cache_key = (domain.id, domain.dkim_selector, domain.ed25519_selector or "")
        signer = self._signers.get(cache_key)
        if signer is None:
            keys = dkim_keys(domain, secret_key=self.settings.secret_key_bytes())
            signer = self._signers[cache_key] = observed.TimedSigner(DkimSigner(keys))
        return signer


def _message_ids(recipients: Sequence[ClaimedRecipient]) -> list[str]:
    """The distinct messages of some recipients, in a stable order."""
    return sorted({recipient.message_id for recipient in recipients})


async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a transaction, once more if its pooled connection turned out to be dead (the
    database restarted): what pre-ping would have caught, without its round trip."""
    try:
        return await attempt()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("database connection lost; retrying the transaction once")
        return await attempt()


def smtp_options(settings: Settings) -> SmtpOptions:
    """Connection options for MX hosts, or for the relay."""
    relay = settings.relay
    return SmtpOptions(
        port=relay.port if relay else settings.mx_port,
        helo_name=settings.hostname,
        connect_timeout=settings.smtp_connect_timeout.total_seconds(),
        greeting_timeout=settings.smtp_greeting_timeout.total_seconds(),
        command_timeout=settings.smtp_command_timeout.total_seconds(),
        data_timeout=settings.smtp_data_timeout.total_seconds(),
        username=relay.username if relay else None,
        password=relay.password if relay else None,
        implicit_tls=relay.implicit_tls if relay else False,
        max_recipients=settings.smtp_max_recipients,
        tls_ca_file=str(settings.tls_ca_file) if settings.tls_ca_file else None,
    )


def policy_fetcher(settings: Settings, resolver: dns.asyncresolver.Resolver) -> Fetcher:
    """Fetches MTA-STS policies as the settings say."""
    return Fetcher(
        resolver,
        port=settings.mta_sts_port,
        timeout=settings.mta_sts_timeout.total_seconds(),
        ca_file=str(settings.tls_ca_file) if settings.tls_ca_file else None,
        allow_private=settings.allow_private_destinations,
    )


def group_copies(copies: Sequence[Copy]) -> list[list[Copy]]:
    """Copies that may share one SMTP transaction: same domain and identical bytes."""
    groups: dict[tuple[str, bytes], list[Copy]] = defaultdict(list)
    for copy in copies:
        groups[(copy.recipient.domain, copy.digest)].append(copy)
    return list(groups.values())


def _refused(item: Refused, started: datetime) -> Outcome:
    """A recipient whose copy could not be made ends in the state the composer chose
    (dropped), with the reason in its event; it is not retried."""
    decision = Decision(item.status, item.reply)
    return Outcome(recipient=item.recipient, decision=decision, started_at=started, duration_ms=0)


def _reply_for(result: TransactionResult, email: str) -> Reply:
    """The recipient's reply; a missing one is a bug we defer on rather than lose."""
    return result.replies.get(email) or synthetic(451, "4.3.0", "no reply recorded")
