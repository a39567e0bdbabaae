"""`columba inbound`: the SMTP listener for bounce domains (aiosmtpd).

It accepts mail only for valid VERP addresses on bounce domains (no open relay,
CHECKLIST 43). Every message it accepts is stored with what it concluded (app.bounces.intake)
and what that changed, in one commit, and only then answered 250 (CHECKLIST 23). A message
that cannot be read is stored as unclassified and answered 250 as well, so a deterministic
failure never makes the sender retry forever; only a failure to store answers 451."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.bounces import inbox, intake, metrics, service, verp
from app.bounces.models import InboundMessage
from app.common.smtp_shutdown import GracefulSMTP, ListenerShutdown, until_signalled
from app.core.config import Settings
from app.core.db import Database, database_unavailable
from app.messages.models import Recipient
from app.observability.server import ObservabilityServer
from app.tracking import tokens

log = logging.getLogger(__name__)

RELAY_DENIED = "550 5.7.1 Relaying denied: this server accepts only bounces for its domains"
BAD_TOKEN = "550 5.1.1 No such bounce address"
TRY_LATER = "451 4.3.0 Temporary failure storing the message; try again later"
# Failures that the same message may not meet again: the database or the way to it.
_TRANSIENT = (OSError, TimeoutError, OperationalError, InterfaceError, PoolTimeoutError)


def _transient(exc: BaseException) -> bool:
    """Whether a retry of the same message may succeed (then 451), not a deterministic error:
    also a PostgreSQL starting up or shutting down (a plain DBAPIError, issue 17), which was
    taken for bad data and the bounce kept unclassified once the database was back."""
    if database_unavailable(exc):
        return True
    return isinstance(exc, _TRANSIENT) or isinstance(exc.__cause__, _TRANSIENT)


class InboundHandler:
    """aiosmtpd hooks: check each RCPT, record each message's report."""

    def __init__(self, settings: Settings, db: Database) -> None:
        """Hold the database and the VERP key."""
        self.db = db
        self.secret_key = settings.secret_key_bytes()
        self.store_max_size = settings.inbound_store_max_size

    def _recipient_of(self, address: str) -> str:
        """The recipient id a VERP or unsubscribe address of ours names (InvalidVerpAddress
        for neither)."""
        unsubscribing = tokens.parse_mailto_address(address, secret_key=self.secret_key)
        if unsubscribing is not None:
            return unsubscribing
        return verp.parse(address, secret_key=self.secret_key).recipient_id

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept only VERP and unsubscribe addresses with a valid HMAC on one of our bounce
        domains."""
        try:
            _, domain = verp.split_domain(address)
        except verp.InvalidVerpAddress:
            return BAD_TOKEN
        async with self.db.session() as db_session:
            ours = await service.is_bounce_domain(db_session, domain)
        if not ours:
            return RELAY_DENIED
        try:
            self._recipient_of(address)
        except verp.InvalidVerpAddress as exc:
            log.info("refused RCPT %s: %s", address, exc)
            return BAD_TOKEN
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Read the message, store it with what it changed; 250 only after the commit."""
        data = envelope.original_content or b""
        sender = intake.clean(str(envelope.mail_from or "")) or ""
        reading = intake.read_message(data, envelope_sender=sender)
        arrivals = [
            inbox.Arrival(verp=r, envelope_sender=sender, data=data) for r in envelope.rcpt_tos
        ]
        try:
            rows = await self._record(arrivals, reading, apply=True)
        except Exception as exc:
            if _transient(exc):
                log.exception("could not store an inbound message")
                metrics.FAILURES.inc()
                return TRY_LATER
            # A bug or data the database refuses: the same message would fail the same way
            # on every retry, so it is kept unclassified, with the reason, and answered 250.
            log.exception("could not apply an inbound message; keeping it unclassified")
            failed = intake.Reading(
                intake.Outcome.UNCLASSIFIED, "error", reason=f"not applied: {exc!r}"[:500]
            )
            try:
                rows = await self._record(arrivals, replace_reading(reading, failed), apply=False)
            except Exception:
                log.exception("could not store an inbound message")
                metrics.FAILURES.inc()
                return TRY_LATER
        return _answer(rows)

    def _reading_for(self, arrival: inbox.Arrival, reading: intake.Reading) -> intake.Reading:
        """What the message means for this address: to an unsubscribe address, whatever a
        person wrote is a request to unsubscribe (RFC 2369 §3.2)."""
        if not _is_unsubscribe_address(arrival.verp):
            return reading
        return intake.unsubscribe_request(reading, envelope_sender=arrival.envelope_sender)

    async def _record(
        self, arrivals: list[inbox.Arrival], reading: intake.Reading, *, apply: bool
    ) -> list[InboundMessage]:
        """Apply the reading for each VERP address and store the message, in one commit."""
        rows = []
        async with self.db.session() as db_session:
            for arrival in arrivals:
                leader = await db_session.get(Recipient, self._recipient_of(arrival.verp))
                read = self._reading_for(arrival, reading)
                applied = service.Applied()
                if leader is not None and apply:
                    applied = await service.apply(
                        db_session, leader=leader, reading=read, secret_key=self.secret_key
                    )
                rows.append(
                    inbox.store(
                        db_session,
                        arrival=arrival,
                        leader=leader,
                        reading=read,
                        applied=applied,
                        max_size=self.store_max_size,
                    )
                )
            await db_session.commit()
        for row in rows:
            metrics.count(intake.Outcome(row.outcome), row.bounce_type)
            fields = {
                "event": "inbound_message",
                "inbound_id": row.id,
                "outcome": str(row.outcome),
                "bounce_type": row.bounce_type,
                "detector": row.detector,
            }
            if row.outcome == intake.Outcome.UNCLASSIFIED:
                log.warning("inbound message %s unclassified: %s", row.id, row.reason, extra=fields)
            else:
                log.info(
                    "inbound message %s: %s (%s)", row.id, row.outcome, row.detector, extra=fields
                )
        return rows


def _is_unsubscribe_address(address: str) -> bool:
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    return local.startswith(tokens.UNSUBSCRIBE_PREFIX)


def replace_reading(reading: intake.Reading, failed: intake.Reading) -> intake.Reading:
    """The failed reading with what is known of the message (its subject and sender)."""
    return dataclasses.replace(failed, subject=reading.subject, sender=reading.sender)


def _answer(rows: list[InboundMessage]) -> str:
    """The 250 reply: what was concluded, and the stored ids to look them up by."""
    events = sum(row.events for row in rows)
    duplicates = sum(row.duplicates for row in rows)
    outcomes = ",".join(sorted({row.outcome for row in rows}))
    ids = ",".join(row.id for row in rows)
    return (
        f"250 2.0.0 OK: {outcomes}; {events} recorded, {duplicates} already known; stored as {ids}"
    )


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """STARTTLS for the listener when SMTP_TLS_CERT and SMTP_TLS_KEY are set."""
    if settings.smtp_tls_cert is None or settings.smtp_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key)
    return context


async def start_inbound(
    settings: Settings,
    db: Database,
    *,
    host: str,
    port: int,
    shutdown: ListenerShutdown | None = None,
) -> asyncio.base_events.Server:
    """Listen for bounces and complaints on host:port; `shutdown` tracks the sessions for a
    graceful stop (app.common.smtp_shutdown)."""
    handler = InboundHandler(settings, db)
    context = tls_context(settings)
    options: dict[str, Any] = {
        "hostname": settings.hostname,
        "data_size_limit": settings.inbound_max_message_size,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "ident": "Columba inbound",
    }
    if context is not None:
        options["tls_context"] = context
    sessions = shutdown or ListenerShutdown()
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: GracefulSMTP(handler, shutdown=sessions, **options), host, port
    )


async def serve_inbound(
    settings: Settings, *, host: str, port: int, metrics_port: int | None = None
) -> None:
    """Run the listener until SIGTERM or SIGINT (then stop gracefully); its metrics and health
    on `metrics_port` if given."""
    observability = ObservabilityServer(settings)
    if metrics_port:
        metrics.prime()
        await observability.start(host, metrics_port)
    db = Database(settings)
    shutdown = ListenerShutdown()
    server = await start_inbound(settings, db, host=host, port=port, shutdown=shutdown)
    log.info("columba inbound listening on %s:%s", host, port)
    try:
        await until_signalled()
        log.info("columba inbound stopping")
        # New sessions get 421 while the open ones finish (a bounce being stored is
        # answered before its channel closes); then the listening socket closes.
        await shutdown.run(settings.shutdown_grace.total_seconds())
        server.close()
        await server.wait_closed()
    finally:
        await observability.close()
        await db.dispose()
