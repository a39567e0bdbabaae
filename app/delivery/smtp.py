"""The SMTP client side of delivery: sessions and transactions on them.

Replies are mapped per stage as RFC 5321 §4.2 and §4.5.3 describe: RCPT replies apply to one
recipient, MAIL and DATA replies to every recipient of the transaction, and a dropped
connection or a timeout counts as 451 for whoever has no final reply yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib

from app.delivery.idn import envelope_address
from app.delivery.mx import MXHost
from app.delivery.replies import Reply, synthetic

_SUCCESS = (250, 251)
TlsResult = tuple[str, str, str, str | None]  # MX host, address, RFC 8460 result, detail


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
    # Try STARTTLS with certificate validation first, so that every attempt knows whether
    # the certificate validated (MTA-STS and per-destination policies need it).
    verify_tls: bool = True
    tls_ca_file: str | None = None  # trust anchors beside the system's


@dataclass(slots=True)
class TransactionResult:
    """Per-recipient final replies, and where the transaction went."""

    replies: dict[str, Reply] = field(default_factory=dict)
    mx_host: str | None = None
    ip: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    tls_verified: bool | None = None
    # For TLS-RPT (RFC 8460): (MX host, address, result type, detail) of every session
    # tried under a receiver's policy, failed ones included.
    tls_results: list[TlsResult] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What a session's TLS was: negotiated version and cipher, whether the certificate
    validated for the host's name, and if not, why (with its RFC 8460 §4.3 result type)."""

    version: str | None = None
    cipher: str | None = None
    verified: bool = False
    offered: bool = False  # the server offered STARTTLS (or spoke TLS at once)
    error: str | None = None
    failure_type: str | None = None


class HostUnusable(Exception):
    """This host cannot take the message now; the next MX host may."""

    def __init__(self, reply: Reply, tls: TlsInfo | None = None) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.tls = tls


def opportunistic_tls_context() -> ssl.SSLContext:
    """TLS without certificate checks: MX hosts rarely have valid certificates, and
    opportunistic STARTTLS (RFC 3207) only protects against passive eavesdropping."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_TLS_CONTEXT = opportunistic_tls_context()
TlsMode = Literal["verify", "opportunistic", "none"]
# A host whose certificate did not validate is not asked again for a while: each new
# connection to it would otherwise cost a failed handshake and a second connection.
UNVERIFIABLE_SECONDS = 3600.0
_unverifiable: dict[tuple[str, str], tuple[float, str, str]] = {}


@functools.lru_cache(maxsize=8)
def verifying_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """TLS that validates the certificate chain and the host name (RFC 6125), against the
    system's trust store and `ca_file`."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


# OpenSSL's X509_V_ERR_* codes mapped to RFC 8460 §4.3.2.1 result types.
_CERT_FAILURES = {
    10: "certificate-expired",
    62: "certificate-host-mismatch",
    18: "certificate-not-trusted",
    19: "certificate-not-trusted",
    20: "certificate-not-trusted",
    21: "certificate-not-trusted",
}


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure somewhere in an exception's chain, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _connection_lost(stage: str, exc: BaseException) -> Reply:
    """A dropped connection or timeout, reported as 451 (RFC 5321 §4.5.3.2)."""
    detail = "timed out" if isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError) else "lost"
    return synthetic(451, "4.4.2", f"connection {detail} at {stage} ({exc})", stage=stage)


def _reply_of(exc: aiosmtplib.SMTPResponseException, stage: str) -> Reply:
    return Reply.parse(exc.code, exc.message, stage=stage)


class SmtpSession:
    """An open SMTP connection, greeted (EHLO or HELO) and under TLS when the server offers it."""

    def __init__(
        self,
        client: aiosmtplib.SMTP,
        host: MXHost,
        ip: str,
        options: SmtpOptions,
        *,
        verified: bool = False,
        starttls_offered: bool = False,
    ) -> None:
        self.client = client
        self.host = host
        self.ip = ip
        self.options = options
        self.verified = verified
        self.starttls_offered = starttls_offered
        self.tls_error: str | None = None
        self.tls_failure_type: str | None = None

    @property
    def tls(self) -> TlsInfo:
        """The session's TLS as an attempt records it."""
        transport = self.client.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        if ssl_object is None:
            failure = self.tls_failure_type or (
                None if self.starttls_offered else "starttls-not-supported"
            )
            return TlsInfo(
                offered=self.starttls_offered, error=self.tls_error, failure_type=failure
            )
        cipher = ssl_object.cipher()
        return TlsInfo(
            version=ssl_object.version(),
            cipher=cipher[0] if cipher else None,
            verified=self.verified,
            offered=True,
            error=self.tls_error,
            failure_type=self.tls_failure_type,
        )

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

    def abort(self) -> None:
        """Drop the connection without a word: a transaction was cut off mid-way, so the
        server would not read a QUIT as one (RFC 5321 §3.8: it treats this as a broken
        transaction and discards it, unless it had already accepted the DATA)."""
        self.client.close()

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


async def _connect(host: MXHost, ip: str, options: SmtpOptions, *, tls: TlsMode) -> SmtpSession:
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
    verified = offered = False
    try:
        await client.connect(timeout=options.greeting_timeout)
        stage = "EHLO"
        await _greet(client, options.command_timeout)
        offered = options.implicit_tls or client.supports_extension("starttls")
        if tls != "none" and not options.implicit_tls and offered:
            stage = "STARTTLS"
            verified = await _start_tls(client, host, options, verify=tls == "verify")
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
    return SmtpSession(client, host, ip, options, verified=verified, starttls_offered=offered)


async def _start_tls(
    client: aiosmtplib.SMTP, host: MXHost, options: SmtpOptions, *, verify: bool
) -> bool:
    """STARTTLS (RFC 3207), validating the certificate for the MX name when asked; True
    when it did. A refusal (454) leaves the session usable in plaintext."""
    context = verifying_tls_context(options.tls_ca_file) if verify else _TLS_CONTEXT
    try:
        await client.starttls(
            tls_context=context, server_hostname=host.name, timeout=options.command_timeout
        )
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code == 421:
            raise
        return False
    await client.ehlo(timeout=options.command_timeout)
    return verify


class TlsHandshakeFailed(Exception):
    """The TLS handshake broke the connection; retry the host in plaintext."""


async def open_session(host: MXHost, ip: str, options: SmtpOptions) -> SmtpSession:
    """A ready session to one address; TLS when possible, plaintext when the handshake fails.

    The certificate is validated when it can be; one that does not validate still gets
    opportunistic TLS (RFC 7435), and the session says why it did not validate, so that a
    policy requiring validation can refuse it (RFC 8461 §5) and every attempt records it."""
    known = _known_unverifiable(ip, host.name)
    if options.verify_tls and not options.implicit_tls and known is None:
        try:
            return await _connect(host, ip, options, tls="verify")
        except HostUnusable as exc:
            error = _certificate_error(exc)
            if error is None:
                if exc.reply.stage != "STARTTLS" or exc.reply.code != 451:
                    raise
                return await _connect(host, ip, options, tls="none")
            known = _remember_unverifiable(ip, host.name, error)
    try:
        session = await _connect(host, ip, options, tls="opportunistic")
    except HostUnusable as exc:
        if exc.reply.stage != "STARTTLS" or exc.reply.code != 451:
            raise
        # Opportunistic TLS: a server whose handshake fails still gets the mail in plaintext.
        session = await _connect(host, ip, options, tls="none")
        session.tls_error, session.tls_failure_type = str(exc.reply), "validation-failure"
        return session
    if known is not None:
        session.tls_error, session.tls_failure_type = known
    return session


def _known_unverifiable(ip: str, name: str) -> tuple[str, str] | None:
    """Why this host's certificate did not validate lately, or None."""
    entry = _unverifiable.get((ip, name.lower()))
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1], entry[2]


def _remember_unverifiable(
    ip: str, name: str, error: ssl.SSLCertVerificationError
) -> tuple[str, str]:
    """Note that the host's certificate does not validate; returns (reason, result type)."""
    reason = f"certificate of {name} [{ip}] did not validate: {error.verify_message}"
    kind = _CERT_FAILURES.get(error.verify_code, "validation-failure")
    if len(_unverifiable) > 10_000:
        _unverifiable.clear()
    _unverifiable[(ip, name.lower())] = (time.monotonic() + UNVERIFIABLE_SECONDS, reason, kind)
    return reason, kind


def forget_unverifiable() -> None:
    """Forget which hosts' certificates did not validate (tests, and a changed trust store)."""
    _unverifiable.clear()


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
