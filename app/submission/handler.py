"""What the submission listener's commands mean for Columba: who may authenticate, what MAIL,
RCPT and DATA accept, and when a message is committed and the client gets its 250."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.exc import SQLAlchemyError

from app.accounts import service as accounts
from app.accounts.cache import KeyCache
from app.accounts.scopes import Scope
from app.accounts.service import Principal
from app.core import clock
from app.core.config import Settings
from app.core.db import Database
from app.core.ids import new_id
from app.core.queue import Queue
from app.messages.service import AcceptPolicy, policy_from
from app.submission import replies
from app.submission.addresses import checked_email
from app.submission.committer import GroupCommitter
from app.submission.data import DataRules, too_big
from app.submission.guard import Guard, client_network
from app.submission.prepare import Arrival, prepare
from app.submission.replies import Refusal
from app.submission.service import Transaction

if TYPE_CHECKING:
    from app.submission.protocol import SubmissionSession, SubmissionSMTP

log = logging.getLogger(__name__)

SMTP_USERNAME = "apikey"  # SendGrid's convention: the password is the API key
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")  # no column stores NUL; none shows the rest


@dataclass(frozen=True, slots=True)
class _Tls:
    """The TLS in use, for the Received field."""

    version: str | None = None
    cipher: str | None = None
    bits: int | None = None


class SubmissionHandler:
    """aiosmtpd handler shared by every connection of one listener process."""

    def __init__(
        self,
        settings: Settings,
        *,
        database: Database,
        queue: Queue,
        guard: Guard,
        keys: KeyCache,
    ) -> None:
        self.settings = settings
        self.database = database
        self.queue = queue
        self.guard = guard
        self.keys = keys
        self.policy: AcceptPolicy = policy_from(settings)
        # SQLite takes one writer at a time; PostgreSQL overlaps a few transactions.
        self.committer = GroupCommitter(
            database, queue, self.policy, concurrency=1 if settings.is_sqlite else 2
        )
        self.data_rules = DataRules(
            max_size=settings.max_message_size,
            normalize_bare_line_endings=settings.submission_bare_line_endings == "normalize",
        )
        self.connections: set[SubmissionSMTP] = set()
        self.idle = asyncio.Event()  # set while no message is being stored
        self.idle.set()
        self._storing = 0

    @contextlib.asynccontextmanager
    async def storing(self) -> AsyncIterator[None]:
        """Mark a message as being stored: shutdown waits for it before closing sessions."""
        self._storing += 1
        self.idle.clear()
        try:
            yield
        finally:
            self._storing -= 1
            if not self._storing:
                self.idle.set()

    # --- connection and AUTH ----------------------------------------------------------------

    async def refuse_connection(self, ip: str) -> Refusal | None:
        """421 for a connection over the session limits, or from a client IP locked out
        after failed AUTH attempts."""
        crowded = self._over_connection_limits(ip)
        if crowded is not None:
            return crowded
        seconds = await self.guard.ip_locked_for(ip)
        return _locked_out(ip, seconds) if seconds else None

    def _over_connection_limits(self, ip: str) -> Refusal | None:
        """421 when this process already has too many sessions, or too many from `ip` (the
        new session is counted already)."""
        if len(self.connections) > self.settings.submission_max_connections:
            return replies.too_many_connections()
        from_ip = sum(1 for connection in self.connections if connection.peer_ip() == ip)
        if from_ip > self.settings.submission_max_connections_per_ip:
            return replies.too_many_connections(ip)
        return None

    async def authenticate(self, *, ip: str, login: bytes, password: bytes) -> Principal | Refusal:
        """The principal for `apikey` / API key, or the reply refusing it (RFC 4954 §6)."""
        key = password.decode("utf-8", "replace")
        parts = accounts.split_key(key)
        prefix = parts[0] if parts else None
        # Both lockouts in one Redis round trip.
        ip_seconds, seconds = await self.guard.locked_for(ip=ip, key_prefix=prefix)
        if ip_seconds:
            return _locked_out(ip, ip_seconds)
        if login != SMTP_USERNAME.encode() or prefix is None:
            return await self._auth_failed(ip, prefix)
        if seconds:
            return Refusal(454, "4.7.0", f"Temporary authentication failure: too many failed "
                           f"attempts for this key from {client_network(ip)}; try again in "
                           f"{seconds} seconds")  # fmt: skip
        try:
            # The per-process key cache (app/accounts/cache.py), which also records the key's
            # use at most once a minute, as the API does.
            principal = await self.keys.authenticate(key)
        except (SQLAlchemyError, OSError, TimeoutError):
            log.exception("SMTP AUTH: database unavailable")
            return Refusal(454, "4.7.0", "Temporary authentication failure")
        if principal is None:
            return await self._auth_failed(ip, prefix)
        if not principal.allows(Scope.MAIL_SEND):
            return Refusal(535, "5.7.8", "Authentication credentials invalid: this API key "
                           f"lacks the {Scope.MAIL_SEND} scope")  # fmt: skip
        return principal

    async def _auth_failed(self, ip: str, prefix: str | None) -> Refusal:
        """535, or 421 when this failure locks the client out."""
        seconds = await self.guard.auth_failed(ip=ip, key_prefix=prefix)
        if seconds:
            return _locked_out(ip, seconds)
        return Refusal(535, "5.7.8", "Authentication credentials invalid")

    # --- aiosmtpd hooks ---------------------------------------------------------------------
    # aiosmtpd looks hooks up by these exact names, hence the upper case.

    async def handle_EHLO(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Add SIZE (RFC 1870) and PIPELINING (RFC 2920) to what aiosmtpd offers."""
        session.host_name = hostname
        extra = [f"250-SIZE {self.settings.max_message_size}", "250-PIPELINING"]
        return [responses[0], *extra, *responses[1:]]

    async def handle_MAIL(  # noqa: N802
        self,
        server: SMTP,
        session: SubmissionSession,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        """Check the declared SIZE and the key's message rate; aiosmtpd has checked AUTH."""
        principal = session.principal
        assert principal is not None  # aiosmtpd's auth_required answers 530 before this
        if not address.isascii() and not envelope.smtp_utf8:
            return replies.NEEDS_SMTPUTF8
        problem = _unstorable(address)
        if problem is not None:
            return f"553 5.1.7 Bad sender address syntax: {problem}"
        declared = _declared_size(options)
        if declared is not None and declared > self.settings.max_message_size:
            return too_big(self.settings.max_message_size).reply
        per_minute = (
            principal.api_key.smtp_messages_per_minute or self.settings.submission_rate_limit
        )
        rate = await self.guard.message_allowed(
            api_key_id=principal.api_key.id, per_minute=per_minute
        )
        if not rate.allowed:
            wait = max(1, rate.reset_at - int(clock.now().timestamp()))
            return (
                f"451 4.7.1 Rate limit exceeded: this API key may send {per_minute} messages "
                f"per minute over SMTP; try again in {wait} seconds"
            )
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        """Any address for an authenticated sender, up to the recipient limit."""
        if len(envelope.rcpt_tos) >= self.settings.submission_max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        if not address.isascii() and not envelope.smtp_utf8:
            return replies.NEEDS_SMTPUTF8
        try:
            email = checked_email(address)
        except ValueError as exc:
            return f"553 5.1.3 Bad recipient address syntax: {exc}"
        if email.lower() not in {known.lower() for known in envelope.rcpt_tos}:
            envelope.rcpt_tos.append(email)  # a repeated RCPT gets one copy
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(  # noqa: N802
        self, server: SubmissionSMTP, session: SubmissionSession, envelope: Envelope
    ) -> str:
        """Prepare and store the message; 250 with its id only after the commit."""
        principal = session.principal
        assert principal is not None
        assert envelope.original_content is not None
        transaction = self._transaction(server, session, envelope, principal)
        tls = _tls_of(server)
        arrival = Arrival(
            message_id=transaction.message_id,
            hostname=self.settings.hostname,
            helo=session.host_name or "",
            client_ip=transaction.client_ip,
            received_at=transaction.accepted_at,
            tls_version=tls.version,
            tls_cipher=tls.cipher,
            tls_bits=tls.bits,
        )
        try:
            prepared = prepare(
                envelope.original_content,
                arrival,
                max_schedule_ahead=self.settings.max_schedule_ahead,
            )
            message_id = await self.committer.store(transaction, prepared)
        except Refusal as refusal:
            return refusal.reply
        return f"250 2.0.0 Ok: queued as {message_id}"

    async def handle_exception(self, error: Exception) -> str:
        """Any unexpected error: a temporary failure, so the client keeps the message."""
        log.error("SMTP submission: unexpected error", exc_info=error)
        return replies.LOCAL_ERROR

    # --- storing ----------------------------------------------------------------------------

    def _transaction(
        self,
        server: SubmissionSMTP,
        session: SubmissionSession,
        envelope: Envelope,
        principal: Principal,
    ) -> Transaction:
        """The transaction as received, with a new message id and the accept time."""
        return Transaction(
            message_id=new_id(),
            api_key_id=principal.api_key.id,
            mail_from=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            size=len(envelope.original_content or b""),
            client_ip=server.peer_ip(),
            helo=_storable_helo(session.host_name or ""),
            tls_version=_tls_of(server).version,
            accepted_at=clock.now(),
            request_id=session.request_id,
        )


def _locked_out(ip: str, seconds: int) -> Refusal:
    """421 4.7.0: the client is locked out after repeated AUTH failures (CHECKLIST 42)."""
    return Refusal(421, "4.7.0", f"Too many failed authentication attempts from {ip}; "
                   f"try again in {seconds} seconds")  # fmt: skip


def _unstorable(address: str) -> str | None:
    """What keeps a MAIL FROM address from being stored, if anything. The address is only
    kept (our VERP address is the return path), so whatever SMTP clients write is taken, but
    not bytes that are no UTF-8 (aiosmtpd passes them on as lone surrogates) nor controls."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return "not UTF-8"
    return "control characters" if _CONTROLS.search(address) else None


def _storable_helo(helo: str) -> str:
    """The EHLO name as stored: RFC 5321 §4.1.4 forbids refusing mail for a bad one, but
    bytes that are no UTF-8 (lone surrogates from aiosmtpd) and controls cannot be stored."""
    text = helo.encode("utf-8", "replace").decode("utf-8")
    return _CONTROLS.sub("?", text)


def _declared_size(options: list[str]) -> int | None:
    """The SIZE= value of MAIL FROM (RFC 1870 §3), if any."""
    for option in options:
        keyword, _, value = option.partition("=")
        if keyword.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


def _tls_of(server: SubmissionSMTP) -> _Tls:
    """Protocol version and cipher of the connection."""
    ssl_object = server.ssl_object()
    if ssl_object is None:
        return _Tls()
    cipher = ssl_object.cipher()
    return _Tls(ssl_object.version(), cipher[0] if cipher else None, cipher[2] if cipher else None)
