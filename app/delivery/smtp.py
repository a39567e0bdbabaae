"""The SMTP client side of delivery: sessions and transactions on them.

Replies are mapped per stage as RFC 5321 §4.2 and §4.5.3 describe: RCPT replies apply to one
recipient, MAIL and DATA replies to every recipient of the transaction, and a dropped
connection or a timeout counts as 451 for whoever has no final reply yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from app.delivery.idn import envelope_address
from app.delivery.mx import MXHost
from app.delivery.replies import Reply, synthetic

_SUCCESS = (250, 251)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What one SMTP transaction carries: envelope addresses and the signed message bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    """How to talk to MX hosts (or the relay)."""

    port: int = 25
    helo_name: str = "localhost"
    connect_timeout: float = 30.0
    greeting_timeout: float = 300.0
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    username: str | None = None
    password: str | None = None
    implicit_tls: bool = False
    max_recipients: int = 100


@dataclass(slots=True)
class TransactionResult:
    """Per-recipient final replies, and where the transaction went."""

    replies: dict[str, Reply] = field(default_factory=dict)
    mx_host: str | None = None
    ip: str | None = None
    tls_version: str | None = None


class HostUnusable(Exception):
    """This host cannot take the message now; the next MX host may."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def opportunistic_tls_context() -> ssl.SSLContext:
    """TLS without certificate checks: MX hosts rarely have valid certificates, and
    opportunistic STARTTLS (RFC 3207) only protects against passive eavesdropping."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_TLS_CONTEXT = opportunistic_tls_context()


def _connection_lost(stage: str, exc: BaseException) -> Reply:
    """A dropped connection or timeout, reported as 451 (RFC 5321 §4.5.3.2)."""
    detail = "timed out" if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError) else "lost"
    return synthetic(451, "4.4.2", f"connection {detail} at {stage} ({exc})", stage=stage)


def _reply_of(exc: aiosmtplib.SMTPResponseException, stage: str) -> Reply:
    return Reply.parse(exc.code, exc.message, stage=stage)


class SmtpSession:
    """An open SMTP connection, greeted (EHLO or HELO) and under TLS when the server offers it."""

    def __init__(
        self, client: aiosmtplib.SMTP, host: MXHost, ip: str, options: SmtpOptions
    ) -> None:
        self.client = client
        self.host = host
        self.ip = ip
        self.options = options

    @property
    def tls_version(self) -> str | None:
        """The negotiated TLS version, or None in plaintext."""
        transport = self.client.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        return ssl_object.version() if ssl_object is not None else None

    @property
    def is_connected(self) -> bool:
        """True while the server has not closed the connection."""
        return self.client.is_connected

    def supports(self, extension: str) -> bool:
        """Whether EHLO advertised the extension."""
        return self.client.supports_extension(extension)

    async def close(self) -> None:
        """QUIT politely, then close whatever is left."""
        if self.client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self.client.quit(timeout=5)
        self.client.close()


async def _greet(client: aiosmtplib.SMTP, timeout: float) -> None:
    """EHLO, falling back to HELO when the server refuses it (RFC 5321 §3.2)."""
    try:
        await client.ehlo(timeout=timeout)
    except aiosmtplib.SMTPHeloError as exc:
        if exc.code < 500:
            raise
        await client.helo(timeout=timeout)


async def _tcp_connect(ip: str, port: int, timeout: float) -> socket.socket:
    """A connected socket; its own timeout, shorter than the greeting's (RFC 5321 §4.5.3.2.1
    allows 5 minutes for the 220, but a host that does not even answer SYN is skipped fast)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect(host: MXHost, ip: str, options: SmtpOptions, *, try_tls: bool) -> SmtpSession:
    """Connect, greet and (when offered and wanted) STARTTLS; raises HostUnusable."""
    try:
        sock = await _tcp_connect(ip, options.port, options.connect_timeout)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        raise HostUnusable(
            synthetic(
                451, "4.4.1", f"cannot connect to {host.name} [{ip}]: {reason}", stage="CONNECT"
            )
        ) from exc
    client = aiosmtplib.SMTP(
        sock=sock,
        local_hostname=options.helo_name,
        timeout=options.command_timeout,
        use_tls=options.implicit_tls,
        start_tls=False,
        validate_certs=False,
        tls_context=_TLS_CONTEXT,
    )
    stage = "CONNECT"
    try:
        await client.connect(timeout=options.greeting_timeout)
        stage = "EHLO"
        await _greet(client, options.command_timeout)
        if try_tls and not options.implicit_tls and client.supports_extension("starttls"):
            stage = "STARTTLS"
            await _start_tls(client, host, options)
        if options.username is not None:
            stage = "AUTH"
            await client.login(options.username, options.password or "")
    except aiosmtplib.SMTPResponseException as exc:
        client.close()
        raise HostUnusable(_reply_of(exc, stage)) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        client.close()
        sock.close()
        raise HostUnusable(
            synthetic(451, "4.4.1", f"cannot talk to {host.name} [{ip}]: {exc}", stage=stage)
        ) from exc
    return SmtpSession(client, host, ip, options)


async def _start_tls(client: aiosmtplib.SMTP, host: MXHost, options: SmtpOptions) -> None:
    """STARTTLS (RFC 3207); a refusal (454) leaves the session usable in plaintext."""
    try:
        await client.starttls(
            tls_context=_TLS_CONTEXT, server_hostname=host.name, timeout=options.command_timeout
        )
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code == 421:
            raise
        return
    await client.ehlo(timeout=options.command_timeout)


class TlsHandshakeFailed(Exception):
    """The TLS handshake broke the connection; retry the host in plaintext."""


async def open_session(host: MXHost, ip: str, options: SmtpOptions) -> SmtpSession:
    """A ready session to one address; TLS when possible, plaintext when the handshake fails."""
    try:
        return await _connect(host, ip, options, try_tls=True)
    except HostUnusable as exc:
        if exc.reply.stage != "STARTTLS" or exc.reply.code != 451:
            raise
    # Opportunistic TLS: a server whose handshake fails still gets the mail in plaintext.
    return await _connect(host, ip, options, try_tls=False)


def mail_parameters(session: SmtpSession, envelope: Envelope) -> list[str]:
    """ESMTP parameters for MAIL FROM: SIZE (RFC 1870) and SMTPUTF8 (RFC 6531)."""
    parameters = []
    if session.supports("size"):
        parameters.append(f"SIZE={len(envelope.data)}")
    if envelope.smtputf8:
        parameters.append("SMTPUTF8")
        # RFC 6531 §3.1: SMTPUTF8 implies 8-bit content, announced with BODY=8BITMIME.
        if session.supports("8bitmime"):
            parameters.append("BODY=8BITMIME")
    return parameters


def check_extensions(session: SmtpSession, envelope: Envelope) -> Reply | None:
    """A permanent reply when this server cannot take the message as it is, else None."""
    limit = session.client.esmtp_extensions.get("size", "")
    if limit.isdigit() and int(limit) > 0 and len(envelope.data) > int(limit):
        # RFC 1870 §6: do not transmit a message larger than the advertised SIZE.
        return synthetic(552, "5.3.4", f"message size exceeds the server's limit of {limit}")
    if envelope.smtputf8 and not session.supports("smtputf8"):
        # RFC 6531 §3.2: an internationalised message needs an SMTPUTF8 server.
        return synthetic(553, "5.6.7", "the server does not support SMTPUTF8")
    return None


def _is_too_many_recipients(reply: Reply) -> bool:
    """452 after some RCPTs: the rest go in a follow-up transaction (RFC 5321 §4.5.3.1.10)."""
    return reply.code == 452 and (
        reply.enhanced == "4.5.3" or "too many recipients" in reply.text.lower()
    )


async def _send_recipients(
    session: SmtpSession, recipients: Sequence[str], encoding: str
) -> tuple[list[str], dict[str, Reply], list[str]]:
    """RCPT each address: (accepted, refused replies, left for a follow-up transaction)."""
    accepted: list[str] = []
    refused: dict[str, Reply] = {}
    for index, recipient in enumerate(recipients):
        try:
            response = await session.client.rcpt(envelope_address(recipient), encoding=encoding)
            reply = Reply.parse(response.code, response.message, stage="RCPT")
        except aiosmtplib.SMTPResponseException as exc:
            reply = _reply_of(exc, "RCPT")
        if reply.code in _SUCCESS:
            accepted.append(recipient)
        elif _is_too_many_recipients(reply) and accepted:
            return accepted, refused, list(recipients[index:])
        else:
            refused[recipient] = reply
            if reply.code == 421:  # the server is closing the connection
                rest = {r: reply for r in recipients[index + 1 :]}
                return accepted, refused | rest, []
    return accepted, refused, []


async def transaction(
    session: SmtpSession, envelope: Envelope, recipients: Sequence[str]
) -> tuple[dict[str, Reply], list[str]]:
    """One MAIL/RCPT/DATA exchange: final replies, and recipients left for another transaction."""
    encoding = "utf-8" if envelope.smtputf8 else "ascii"
    stage = "MAIL"
    replies: dict[str, Reply] = {}
    try:
        await session.client.mail(
            envelope_address(envelope.mail_from),
            options=mail_parameters(session, envelope),
            encoding=encoding,
        )
        stage = "RCPT"
        accepted, replies, leftover = await _send_recipients(session, recipients, encoding)
        if not accepted:
            if session.is_connected:
                await session.client.rset()
            return replies, leftover
        stage = "DATA"
        # RFC 5321 §4.5.3.2.6: wait up to 10 minutes (configurable) for the final reply.
        response = await session.client.data(envelope.data, timeout=session.options.data_timeout)
        done = Reply.parse(response.code, response.message, stage="DATA")
    except aiosmtplib.SMTPResponseException as exc:
        done = _reply_of(exc, stage)
        leftover = []
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        done = _connection_lost(stage, exc)
        leftover = []
    pending = [r for r in recipients if r not in replies and r not in leftover]
    replies.update((recipient, done) for recipient in pending)
    return replies, leftover


async def send_envelope(
    session: SmtpSession, envelope: Envelope, batch_size: int
) -> dict[str, Reply]:
    """Every recipient of the envelope over one session, in as many transactions as needed."""
    replies: dict[str, Reply] = {}
    queue = list(envelope.recipients)
    while queue:
        batch, queue = queue[:batch_size], queue[batch_size:]
        done, leftover = await transaction(session, envelope, batch)
        replies.update(done)
        queue = leftover + queue
        if queue and not session.is_connected:
            lost = synthetic(451, "4.4.2", "connection closed before all recipients were sent")
            replies.update((recipient, lost) for recipient in queue)
            break
        if leftover and not done:
            # The server accepted nobody and deferred everyone: do not loop forever.
            replies.update((recipient, _leftover_reply()) for recipient in leftover)
            break
    return replies


def _leftover_reply() -> Reply:
    return synthetic(452, "4.5.3", "too many recipients", stage="RCPT")
