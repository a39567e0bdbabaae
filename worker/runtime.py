"""What one worker process holds: settings, database, resolver, signing keys, SMTP pool.

A delivery job is: claim due recipients → render and sign their copies → send each group of
identical copies to its destination → record every outcome. The steps live in
app.messages (database, composition) and app.delivery (DNS, SMTP, limits); this module only
strings them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dns.asyncresolver
from redis.asyncio import Redis

from app import clock
from app.config import Settings
from app.db import Database
from app.delivery.mx import Destination, relay_destination, resolve_destination
from app.delivery.outbound import deliver
from app.delivery.pool import ConnectionPool, Throttled
from app.delivery.replies import Reply, synthetic
from app.delivery.resolver import make_resolver, resolve_host
from app.delivery.retry import RetryPolicy, decide
from app.delivery.signing import DkimSigner
from app.delivery.smtp import Envelope, SmtpOptions, TransactionResult
from app.delivery.throttle import DestinationKey, DestinationThrottle, destination_key
from app.domains.service import dkim_key
from app.messages import dispatch
from app.messages.compose import Composer, Copy, Refused, return_path
from app.messages.dispatch import Claim, ClaimedRecipient, LoadedMessage, Outcome

log = logging.getLogger(__name__)

DESTINATION_CONCURRENCY = 50  # transactions one job runs at once (across destinations)


@dataclass(frozen=True, slots=True)
class Released:
    """A recipient handed back unattempted (its destination was at its limit)."""

    recipient: ClaimedRecipient
    retry_at: datetime


class Runtime:
    """Long-lived per-process state of a worker."""

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.db = Database(settings)
        self.resolver: dns.asyncresolver.Resolver = make_resolver(
            settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds()
        )
        self.retry_policy = RetryPolicy(settings.retry_schedule, settings.max_message_age)
        self._signers: dict[str, DkimSigner] = {}
        self.composer = Composer(self.signer)
        self.pool = ConnectionPool(
            smtp_options(settings),
            throttle=DestinationThrottle(redis) if redis is not None else None,
            idle_timeout=settings.smtp_idle_timeout.total_seconds(),
            max_messages=settings.smtp_max_messages_per_connection,
            slot_wait=settings.throttle_wait.total_seconds(),
        )

    def start(self) -> None:
        """Begin background upkeep (closing idle connections)."""
        self.pool.start()

    async def close(self) -> None:
        """Close SMTP connections and the database pool."""
        await self.pool.close()
        await self.db.dispose()

    async def deliver_message(self, message_id: str) -> int:
        """Deliver every due recipient of a message; returns how many outcomes were recorded."""
        async with self.db.session() as session:
            claim = await dispatch.claim(
                session, message_id=message_id, lease=self.settings.lease_duration
            )
            await session.commit()
        if not claim.recipients:
            return 0
        async with self._keep_lease(claim):
            async with self.db.session() as session:
                loaded = await dispatch.load_message(session, message_id=message_id)
            outcomes, released = await self._attempt(claim, loaded)
        async with self.db.session() as session:
            recorded = await dispatch.record_outcomes(
                session, claim=claim, account_id=loaded.message.account_id, outcomes=outcomes
            )
            for retry_at, recipients in _by_retry_time(released).items():
                await dispatch.release(
                    session, claim=claim, recipients=recipients, retry_at=retry_at
                )
            await session.commit()
        return recorded

    async def sweep(self) -> list[str]:
        """Messages with due recipients (the caller enqueues them)."""
        async with self.db.session() as session:
            return await dispatch.due_message_ids(session)

    @contextlib.asynccontextmanager
    async def _keep_lease(self, claim: Claim) -> AsyncIterator[None]:
        """Renew the claim's lease while the delivery runs, so a long SMTP exchange
        is not mistaken for a dead worker."""
        interval = self.settings.lease_duration.total_seconds() / 3

        async def renew() -> None:
            while True:
                await asyncio.sleep(interval)
                async with self.db.session() as session:
                    await dispatch.renew_lease(
                        session, token=claim.token, lease=self.settings.lease_duration
                    )
                    await session.commit()

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _attempt(
        self, claim: Claim, loaded: LoadedMessage
    ) -> tuple[list[Outcome], list[Released]]:
        """Send every recipient's copy; recipients with identical copies share a transaction."""
        started = clock.now()
        try:
            prepared = self.composer.copies(loaded, claim.recipients)
        except Exception as exc:  # a bad key or content must not leave recipients leased
            log.exception("cannot render or sign message %s", claim.message_id)
            reply = synthetic(451, "4.3.0", f"local error preparing the message: {exc}")
            return [self._outcome(r, reply, loaded, started, 0) for r in claim.recipients], []
        outcomes = [
            self._outcome(item.recipient, item.reply, loaded, started, 0)
            for item in prepared
            if isinstance(item, Refused)
        ]
        limit = asyncio.Semaphore(DESTINATION_CONCURRENCY)

        async def one(group: list[Copy]) -> list[Outcome] | list[Released]:
            async with limit:
                return await self._deliver_group(group, loaded)

        groups = group_copies([item for item in prepared if isinstance(item, Copy)])
        results = [item for r in await asyncio.gather(*map(one, groups)) for item in r]
        outcomes += [item for item in results if isinstance(item, Outcome)]
        return outcomes, [item for item in results if isinstance(item, Released)]

    async def _deliver_group(
        self, group: list[Copy], loaded: LoadedMessage
    ) -> list[Outcome] | list[Released]:
        """One transaction's worth of identical copies to one domain."""
        started, began = clock.now(), time.perf_counter()
        leader = group[0]
        emails = tuple(copy.recipient.email for copy in group)
        envelope = Envelope(
            mail_from=return_path(
                loaded, leader.recipient, secret_key=self.settings.secret_key_bytes()
            ),
            recipients=emails,
            data=leader.data,
            smtputf8=leader.smtputf8 or not all(email.isascii() for email in emails),
        )
        destination = await self.destination(leader.recipient.domain)
        try:
            result = await deliver(destination, envelope, self.pool, self.throttle_key(destination))
        except Throttled as exc:
            retry_at = clock.now() + timedelta(seconds=exc.retry_after)
            log.info("%s throttled; %d recipient(s) wait", exc.destination.name, len(group))
            return [Released(copy.recipient, retry_at) for copy in group]
        elapsed = int((time.perf_counter() - began) * 1000)
        return [
            self._outcome(
                copy.recipient,
                _reply_for(result, copy.recipient.email),
                loaded,
                started,
                elapsed,
                result,
            )
            for copy in group
        ]

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
        )

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

    def signer(self, loaded: LoadedMessage) -> DkimSigner:
        """The sending domain's signer, its key decrypted once per process."""
        domain = loaded.domain
        signer = self._signers.get(domain.id)
        if signer is None:
            key = dkim_key(domain, secret_key=self.settings.secret_key_bytes())
            signer = self._signers[domain.id] = DkimSigner([key])
        return signer


def smtp_options(settings: Settings) -> SmtpOptions:
    """Connection options for MX hosts, or for the relay."""
    relay = settings.relay
    return SmtpOptions(
        port=relay.port if relay else settings.mx_port,
        helo_name=settings.hostname,
        connect_timeout=settings.smtp_connect_timeout.total_seconds(),
        command_timeout=settings.smtp_command_timeout.total_seconds(),
        data_timeout=settings.smtp_data_timeout.total_seconds(),
        username=relay.username if relay else None,
        password=relay.password if relay else None,
        implicit_tls=relay.implicit_tls if relay else False,
        max_recipients=settings.smtp_max_recipients,
    )


def group_copies(copies: Sequence[Copy]) -> list[list[Copy]]:
    """Copies that may share one SMTP transaction: same domain and identical bytes."""
    groups: dict[tuple[str, bytes], list[Copy]] = defaultdict(list)
    for copy in copies:
        groups[(copy.recipient.domain, copy.digest)].append(copy)
    return list(groups.values())


def _by_retry_time(released: Sequence[Released]) -> dict[datetime, list[ClaimedRecipient]]:
    grouped: dict[datetime, list[ClaimedRecipient]] = defaultdict(list)
    for item in released:
        grouped[item.retry_at].append(item.recipient)
    return grouped


def _reply_for(result: TransactionResult, email: str) -> Reply:
    """The recipient's reply; a missing one is a bug we defer on rather than lose."""
    return result.replies.get(email) or synthetic(451, "4.3.0", "no reply recorded")
