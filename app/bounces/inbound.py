"""`columba inbound`: the SMTP listener for bounce domains (aiosmtpd).

It accepts mail only for valid VERP addresses on bounce domains (no open relay,
CHECKLIST 43), reads DSNs and ARF reports, commits what they say, and only then answers 250;
a database failure answers 451 so the reporting MTA tries again (CHECKLIST 23)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from app.bounces import service, verp
from app.bounces.reports import parse_report
from app.core.config import Settings
from app.core.db import Database

log = logging.getLogger(__name__)

RELAY_DENIED = "550 5.7.1 Relaying denied: this server accepts only bounces for its domains"
BAD_TOKEN = "550 5.1.1 No such bounce address"
TRY_LATER = "451 4.3.0 Temporary failure recording the report; try again later"


class InboundHandler:
    """aiosmtpd hooks: check each RCPT, record each message's report."""

    def __init__(self, settings: Settings, db: Database) -> None:
        """Hold the database and the VERP key."""
        self.db = db
        self.secret_key = settings.secret_key_bytes()

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept only VERP addresses with a valid HMAC on one of our bounce domains."""
        try:
            _, domain = verp.split_domain(address)
        except verp.InvalidVerpAddress:
            return BAD_TOKEN
        async with self.db.session() as db_session:
            ours = await service.is_bounce_domain(db_session, domain)
        if not ours:
            return RELAY_DENIED
        try:
            verp.parse(address, secret_key=self.secret_key)
        except verp.InvalidVerpAddress as exc:
            log.info("refused RCPT %s: %s", address, exc)
            return BAD_TOKEN
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Parse the report and commit it; 250 only after the commit."""
        data = envelope.original_content or b""
        report = parse_report(data)
        if report is None:
            # Not a DSN or ARF report (an auto-reply, a vacation notice): accepted, nothing to do.
            return "250 2.0.0 OK: not a delivery or feedback report, ignored"
        leaders = [verp.parse(address, secret_key=self.secret_key) for address in envelope.rcpt_tos]
        try:
            async with self.db.session() as db_session:
                outcome = await service.apply(
                    db_session, leaders=leaders, report=report, secret_key=self.secret_key
                )
                await db_session.commit()
        except Exception:
            log.exception("could not record an inbound report")
            return TRY_LATER
        return f"250 2.0.0 OK: {outcome.events} recorded, {outcome.duplicates} already known"


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """STARTTLS for the listener when SMTP_TLS_CERT and SMTP_TLS_KEY are set."""
    if settings.smtp_tls_cert is None or settings.smtp_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key)
    return context


async def start_inbound(
    settings: Settings, db: Database, *, host: str, port: int
) -> asyncio.base_events.Server:
    """Listen for bounces and complaints on host:port."""
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
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SMTP(handler, **options), host, port)


async def serve_inbound(settings: Settings, *, host: str, port: int) -> None:
    """Run the listener until cancelled."""
    db = Database(settings)
    server = await start_inbound(settings, db, host=host, port=port)
    log.info("columba inbound listening on %s:%s", host, port)
    try:
        async with server:
            await server.serve_forever()
    finally:
        await db.dispose()
