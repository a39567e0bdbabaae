"""The SMTP dialogue of the submission listener: aiosmtpd's SMTP, adapted where a public
submission server needs more (RFC 6409, RFC 3207, RFC 8314, RFC 4954).

aiosmtpd parses commands and runs STARTTLS; this class adds implicit TLS awareness (aiosmtpd
only knows STARTTLS), AUTH checked against API keys without blocking the loop, a client-IP
lockout before the greeting, and its own DATA reader (app.submission.data). What each command
means for Columba lives in app.submission.handler.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from base64 import b64decode
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Session, syntax

from app.accounts.service import Principal
from app.common.smtp_shutdown import GracefulSMTP, ListenerShutdown
from app.observability.logs import request_id_from
from app.submission.addresses import PLAIN_ADDRESS
from app.submission.data import read_data
from app.submission.replies import Refusal

if TYPE_CHECKING:
    from app.submission.handler import SubmissionHandler

# `<local@domain>` in ASCII dot-atoms, then nothing or the parameters: what nearly every
# MAIL and RCPT carries, read without the email package's parser (aiosmtpd's _getaddr), with
# the same result (tests/submission/test_parsing_shortcuts_property.py). A comment after the
# address, a control character, a quoted local part, a domain literal, an encoded-word, UTF-8
# or the null path go to the parser.
_PLAIN_PATH = re.compile(rf"<({PLAIN_ADDRESS})>[ \t]*((?:[^\x00-\x20(\x7f][^\x00-\x1f\x7f]*)?)")


class SubmissionSession(Session):
    """aiosmtpd's session, without its deprecation log line on every AUTH."""

    _request_id: str | None = None

    @property
    def request_id(self) -> str:
        """The session's id in the events and delivery logs of its messages (one per
        connection, as an HTTP request has one)."""
        if self._request_id is None:
            self._request_id = "smtp-" + request_id_from(None)
        return self._request_id

    @property
    def login_data(self) -> Any:
        """The AUTH identity (aiosmtpd sets it; Columba uses `principal`)."""
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value

    @property
    def principal(self) -> Principal | None:
        """Who authenticated in this session (RFC 4954: until it ends or STARTTLS resets it)."""
        return self.auth_data if isinstance(self.auth_data, Principal) else None


class SubmissionSMTP(GracefulSMTP):
    """One client connection of the submission listener."""

    def __init__(
        self,
        handler: SubmissionHandler,
        *,
        implicit_tls: bool,
        tls_context: ssl.SSLContext,
        loop: asyncio.AbstractEventLoop,
        shutdown: ListenerShutdown | None = None,
    ) -> None:
        settings = handler.settings
        super().__init__(
            handler,
            shutdown=shutdown or ListenerShutdown(),
            data_size_limit=None,  # SIZE is advertised and enforced by the handler (RFC 1870)
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            ident="ESMTP Columba",
            # Port 465 is TLS from the first byte (RFC 8314 §3); 587 offers STARTTLS (RFC 3207).
            tls_context=None if implicit_tls else tls_context,
            timeout=settings.submission_idle_timeout.total_seconds(),
            # RFC 4954 §4: no AUTH (so no mail at all) until the channel is encrypted.
            auth_required=True,
            auth_require_tls=True,
            loop=loop,
        )
        self.handler = handler
        self.implicit_tls = implicit_tls
        # aiosmtpd keeps these limits in a class-wide dict that EHLO grows; keep ours per
        # session. SIZE= and SMTPUTF8 lengthen MAIL (RFC 1870 §3, RFC 6531 §3.4).
        self.command_size_limits = collections.defaultdict(lambda: 512, {"MAIL": 512 + 26 + 10})

    def _create_session(self) -> Session:
        """Sessions that carry the principal."""
        return SubmissionSession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Track the connection; on port 465 the TLS is already in place."""
        first = self.transport is None
        super().connection_made(transport)
        if self.implicit_tls and getattr(transport, "_ssl_protocol", None) is not None:
            # aiosmtpd reads "TLS is in effect" from _tls_protocol, which only its STARTTLS
            # sets; the implicit TLS layer is the same kind of object (asyncio's SSLProtocol).
            self._tls_protocol = getattr(transport, "_ssl_protocol")  # noqa: B009
        if first and self._handler_coroutine is not None:
            self.handler.connections.add(self)
            self._handler_coroutine.add_done_callback(_retrieve_disconnect)

    def connection_lost(self, error: Exception | None) -> None:
        """Untrack the connection."""
        super().connection_lost(error)
        self.handler.connections.discard(self)

    # Methods, not properties: aiosmtpd's constructor reads every attribute (inspect.getmembers)
    # before the session exists.
    def tls_active(self) -> bool:
        """True once the channel is encrypted (implicit TLS or after STARTTLS)."""
        return self._tls_protocol is not None

    def peer_ip(self) -> str:
        """The client's IP address."""
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else "unknown"

    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS state of the channel, if encrypted."""
        if self.transport is None:
            return None
        found = self.transport.get_extra_info("ssl_object")
        return found if isinstance(found, ssl.SSLObject) else None

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        """Refuse a locked-out client before the greeting (RFC 5321 §3.1: 421 and close)."""
        if self.shutdown.stopping:  # 421 at once, without asking Redis about the client
            await super()._handle_client()
            return
        refusal = await self.handler.refuse_connection(self.peer_ip())
        if refusal is not None:
            await self.push(refusal.reply)
            self.close()
            return
        await super()._handle_client()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802
        """STARTTLS once only; on port 465 the channel is already encrypted."""
        if self.tls_active():
            await self.push("503 5.5.1 Error: TLS already active")
            return
        await super().smtp_STARTTLS(arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of MAIL or RCPT and the rest of the line (None, None: unparsable)."""
        plain = plain_path(arg, self.local_part_limit)
        return super()._getaddr(arg) if plain is None else plain

    # --- AUTH (RFC 4954) ------------------------------------------------------------------
    # aiosmtpd's own PLAIN and LOGIN check credentials with a synchronous callback; API keys
    # live in the database, so these versions await the check instead.

    async def auth_PLAIN(self, _: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """RFC 4616: `authzid NUL authcid NUL passwd`, inline or after an empty challenge."""
        blob = await self._response(args, challenge="")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the PLAIN response")
            return AuthResult(success=False, handled=True)
        return await self._check(parts[1], parts[2])

    async def auth_LOGIN(self, _: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """The LOGIN mechanism: user name and password in two base64 answers."""
        login = await self._response(args, challenge="Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._response([args[0]], challenge="Password:")
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._check(login, password)

    async def _response(self, args: list[str], *, challenge: str) -> bytes | None:
        """The client's answer: the initial response if given, else one to a challenge;
        None when the client cancelled or sent bad base64 (already answered)."""
        if len(args) == 2:
            try:
                return b64decode(args[1], validate=True)
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return None
        answer = await self.challenge_auth(challenge)
        return None if answer is MISSING else bytes(answer)

    async def _check(self, login: bytes, password: bytes) -> AuthResult:
        """Ask the handler; a lockout answers 421 and ends the session (RFC 5321 §3.8)."""
        outcome = await self.handler.authenticate(ip=self.peer_ip(), login=login, password=password)
        if isinstance(outcome, Principal):
            return AuthResult(success=True, auth_data=outcome)
        if outcome.code == 421:
            await self.push(outcome.reply)
            self.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=outcome.reply)

    # --- DATA -------------------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        """Read the message with the listener's rules, then let the handler store it."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await read_data(self._reader, self.handler.data_rules)
        except Refusal as refusal:
            self.envelope = self._create_envelope()
            await self.push(refusal.reply)
            return
        self.envelope.content = self.envelope.original_content = content
        async with self.handler.storing():
            status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()
        await self.push(status)


def plain_path(arg: str, local_part_limit: int) -> tuple[str | None, str | None] | None:
    """What aiosmtpd's _getaddr says of a plain `<local@domain> [parameters]`; None for
    anything else."""
    plain = None if "=?" in arg else _PLAIN_PATH.fullmatch(arg)
    if plain is None:
        return None
    address, rest = plain.group(1, 2)
    if local_part_limit and len(address.rpartition("@")[0]) > local_part_limit:
        return None, None
    return address, rest


def _retrieve_disconnect(task: asyncio.Task[None]) -> None:
    """Retrieve a session's ConnectionError (clients vanish routinely); report anything else."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, ConnectionError):
        context = {"message": "SMTP session failed", "exception": error, "task": task}
        task.get_loop().call_exception_handler(context)
