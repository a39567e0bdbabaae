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
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import dns.asyncresolver

from app import clock
from app.config import Settings
from app.db import Database
from app.delivery import mime
from app.delivery.mx import Destination, relay_destination, resolve_destination
from app.delivery.replies import Reply, synthetic
from app.delivery.resolver import make_resolver, resolve_host
from app.delivery.retry import RetryPolicy, decide
from app.delivery.signing import DkimSigner
from app.delivery.smtp import Envelope, SmtpOptions, TransactionResult, deliver
from app.domains.service import dkim_key
from app.messages import dispatch
from app.messages.dispatch import Claim, ClaimedRecipient, LoadedMessage, Outcome

log = logging.getLogger(__name__)

RENDER_CACHE_SIZE = 64
RENDER_CACHE_MAX_BYTES = 1024 * 1024  # bigger messages are re-rendered rather than kept
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
        self._rendered: OrderedDict[str, bytes] = OrderedDict()
        self._signers: dict[str, DkimSigner] = {}

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
        """Send to every destination of the claim; a local failure defers everyone."""
        started = clock.now()
        try:
            data, smtputf8 = self.signed_message(loaded)
        except Exception as exc:  # a bad key or content must not leave recipients leased
            log.exception("cannot render or sign message %s", claim.message_id)
            reply = synthetic(451, "4.3.0", f"local error preparing the message: {exc}")
            return [self._outcome(r, reply, loaded, started, 0) for r in claim.recipients]
        by_domain: dict[str, list[ClaimedRecipient]] = defaultdict(list)
        for recipient in claim.recipients:
            by_domain[recipient.domain].append(recipient)
        limit = asyncio.Semaphore(DESTINATION_CONCURRENCY)

        async def one(domain: str, recipients: list[ClaimedRecipient]) -> list[Outcome]:
            async with limit:
                return await self._deliver_to(domain, recipients, loaded, data, smtputf8)

        groups = await asyncio.gather(*(one(d, rs) for d, rs in by_domain.items()))
        return [outcome for group in groups for outcome in group]

    async def _deliver_to(
        self,
        domain: str,
        recipients: Sequence[ClaimedRecipient],
        loaded: LoadedMessage,
        data: bytes,
        smtputf8: bool,
    ) -> list[Outcome]:
        """One destination: resolve, transact, turn replies into outcomes."""
        started, began = clock.now(), time.perf_counter()
        emails = tuple(recipient.email for recipient in recipients)
        envelope = Envelope(
            mail_from=loaded.message.from_email,
            recipients=emails,
            data=data,
            smtputf8=smtputf8 or not all(email.isascii() for email in emails),
        )
        destination = await self.destination(domain)
        result = await deliver(destination, envelope, self.smtp_options())
        elapsed = int((time.perf_counter() - began) * 1000)
        return [
            self._outcome(r, _reply_for(result, r.email), loaded, started, elapsed, result)
            for r in recipients
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

    def signed_message(self, loaded: LoadedMessage) -> tuple[bytes, bool]:
        """The message rendered and DKIM-signed, and whether it needs SMTPUTF8.

        Rendering and signing are deterministic (fixed Message-ID, Date, boundaries and t=),
        so every retry sends the same bytes; the cache only saves the work."""
        message_id = loaded.message.id
        content = dispatch.content_of(loaded)
        smtputf8 = mime.needs_smtputf8(content)
        cached = self._rendered.get(message_id)
        if cached is not None:
            self._rendered.move_to_end(message_id)
            return cached, smtputf8
        body = mime.render(content)
        timestamp = int(loaded.message.created_at.timestamp())
        signed = self.signer(loaded).sign(body, timestamp=timestamp) + body
        if len(signed) <= RENDER_CACHE_MAX_BYTES:
            self._rendered[message_id] = signed
            if len(self._rendered) > RENDER_CACHE_SIZE:
                self._rendered.popitem(last=False)
        return signed, smtputf8

    def signer(self, loaded: LoadedMessage) -> DkimSigner:
        """The sending domain's signer, its key decrypted once per process."""
        domain = loaded.domain
        signer = self._signers.get(domain.id)
        if signer is None:
            key = dkim_key(domain, secret_key=self.settings.secret_key_bytes())
            signer = self._signers[domain.id] = DkimSigner([key])
        return signer


def _reply_for(result: TransactionResult, email: str) -> Reply:
    """The recipient's reply; a missing one is a bug we defer on rather than lose."""
    return result.replies.get(email) or synthetic(451, "4.3.0", "no reply recorded")
