"""What one worker process holds: settings, database, resolver, signing keys, rendered bytes.

A delivery job is: claim due recipients → render and sign the message once → send to each
destination → record every outcome. The steps live in app.messages.dispatch (database) and
app.delivery (MIME, DKIM, DNS, SMTP); this module only strings them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import dns.asyncresolver

from app import clock
from app.config import Settings
from app.db import Database
from app.delivery.mx import Destination, relay_destination, resolve_destination
from app.delivery.replies import Reply, synthetic
from app.delivery.resolver import make_resolver, resolve_host
from app.delivery.retry import RetryPolicy, decide
from app.delivery.signing import DkimSigner
from app.delivery.smtp import Envelope, SmtpOptions, TransactionResult, deliver
from app.domains.service import dkim_key
from app.messages import dispatch
from app.messages.compose import Composer, Copy, Refused, return_path
from app.messages.dispatch import Claim, ClaimedRecipient, LoadedMessage, Outcome

log = logging.getLogger(__name__)

DESTINATION_CONCURRENCY = 50


class Runtime:
    """Long-lived per-process state of a worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings)
        self.resolver: dns.asyncresolver.Resolver = make_resolver(
            settings.dns_nameservers, timeout=settings.dns_timeout.total_seconds()
        )
        self.retry_policy = RetryPolicy(settings.retry_schedule, settings.max_message_age)
        self._signers: dict[str, DkimSigner] = {}
        self.composer = Composer(self.signer)

    async def close(self) -> None:
        """Release the database pool."""
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
            outcomes = await self._attempt(claim, loaded)
        async with self.db.session() as session:
            recorded = await dispatch.record_outcomes(
                session, claim=claim, account_id=loaded.message.account_id, outcomes=outcomes
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

    async def _attempt(self, claim: Claim, loaded: LoadedMessage) -> list[Outcome]:
        """Send every recipient's copy; recipients with identical copies share a transaction."""
        started = clock.now()
        try:
            prepared = self.composer.copies(loaded, claim.recipients)
        except Exception as exc:  # a bad key or content must not leave recipients leased
            log.exception("cannot render or sign message %s", claim.message_id)
            reply = synthetic(451, "4.3.0", f"local error preparing the message: {exc}")
            return [self._outcome(r, reply, loaded, started, 0) for r in claim.recipients]
        outcomes = [
            self._outcome(item.recipient, item.reply, loaded, started, 0)
            for item in prepared
            if isinstance(item, Refused)
        ]
        groups = group_copies([item for item in prepared if isinstance(item, Copy)])
        limit = asyncio.Semaphore(DESTINATION_CONCURRENCY)

        async def one(group: list[Copy]) -> list[Outcome]:
            async with limit:
                return await self._deliver_group(group, loaded)

        results = await asyncio.gather(*(one(group) for group in groups))
        return outcomes + [outcome for result in results for outcome in result]

    async def _deliver_group(self, group: list[Copy], loaded: LoadedMessage) -> list[Outcome]:
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
        result = await deliver(destination, envelope, self.smtp_options())
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

    def smtp_options(self) -> SmtpOptions:
        """Connection options for MX hosts, or for the relay."""
        settings, relay = self.settings, self.settings.relay
        return SmtpOptions(
            port=relay.port if relay else settings.mx_port,
            helo_name=settings.hostname,
            connect_timeout=settings.smtp_connect_timeout.total_seconds(),
            command_timeout=settings.smtp_command_timeout.total_seconds(),
            data_timeout=settings.smtp_data_timeout.total_seconds(),
            username=relay.username if relay else None,
            password=relay.password if relay else None,
            implicit_tls=relay.implicit_tls if relay else False,
        )

    def signer(self, loaded: LoadedMessage) -> DkimSigner:
        """The sending domain's signer, its key decrypted once per process."""
        domain = loaded.domain
        signer = self._signers.get(domain.id)
        if signer is None:
            key = dkim_key(domain, secret_key=self.settings.secret_key_bytes())
            signer = self._signers[domain.id] = DkimSigner([key])
        return signer


def group_copies(copies: Sequence[Copy]) -> list[list[Copy]]:
    """Copies that may share one SMTP transaction: same domain and identical bytes."""
    groups: dict[tuple[str, bytes], list[Copy]] = defaultdict(list)
    for copy in copies:
        groups[(copy.recipient.domain, copy.digest)].append(copy)
    return list(groups.values())


def _reply_for(result: TransactionResult, email: str) -> Reply:
    """The recipient's reply; a missing one is a bug we defer on rather than lose."""
    return result.replies.get(email) or synthetic(451, "4.3.0", "no reply recorded")
