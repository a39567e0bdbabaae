"""A scriptable SMTP server (aiosmtpd) on loopback, playing recipients' MX hosts in tests."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, AnyStr, Literal, NoReturn

import trustme
from aiosmtpd.smtp import SMTP, Envelope, Session
from typing_extensions import override

STAGES = frozenset({"CONNECT", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "EOD"})
LOOPBACK_HOSTS = tuple(f"127.0.0.{i}" for i in range(1, 10))

_SIZE_REFUSED = "552 5.3.4 Message size exceeds fixed maximum message size"
_Action = Literal["reply", "drop", "stall"]


# Ports this process has handed out: a probe socket is closed before its port is used, so
# the kernel may offer the same port to the next probe (the chaos test once gave an API
# process and the SMTP listener one port).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port free on every address of LOOPBACK_HOSTS and not handed out before."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((LOOPBACK_HOSTS[0], 0))
            port: int = probe.getsockname()[1]
        if port not in _HANDED_OUT and _free_everywhere(port):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no TCP port is free on all loopback addresses")


def _free_everywhere(port: int) -> bool:
    """Whether the port can be bound on every loopback address."""
    with contextlib.ExitStack() as stack:
        for host in LOOPBACK_HOSTS:
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def make_tls_context(ca: trustme.CA, *hostnames: str) -> ssl.SSLContext:
    """A server-side TLS context with a certificate from `ca` for the names or IPs given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*hostnames).configure_cert(context)
    return context


@dataclass
class ReceivedMessage:
    """One accepted mail transaction, as the MX saw it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer_host: str
    tls: bool
    mail_options: list[str]
    helo: str
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class _Rule:
    """A scripted behaviour at one stage, possibly limited to one recipient or a few uses."""

    stage: str
    action: _Action
    code: int = 0
    text: str = ""
    seconds: float = 0.0
    to: str | None = None
    times: int | None = None

    def matches(self, stage: str, action: _Action, rcpt: str | None) -> bool:
        """Whether this rule applies to the command being answered."""
        if self.stage != stage or self.action != action:
            return False
        return self.to is None or (rcpt is not None and rcpt.lower() == self.to)

    @property
    def accepts(self) -> bool:
        """A 2xx/3xx scripted reply lets the command succeed."""
        return self.code < 400

    @property
    def line(self) -> str:
        """The reply, multi-line when the text holds newlines."""
        return _reply(self.code, self.text.split("\n"))


def _reply(code: int, lines: list[str]) -> str:
    """Format an SMTP reply; push() adds the final CRLF."""
    head = [f"{code}-{line}" for line in lines[:-1]]
    return "\r\n".join([*head, f"{code} {lines[-1]}"])


def _stage(stage: str) -> str:
    """Validate a stage name."""
    upper = stage.upper()
    if upper not in STAGES:
        raise ValueError(f"unknown stage {stage!r}, expected one of {sorted(STAGES)}")
    return upper


def _retrieve_disconnect(task: asyncio.Task[None]) -> None:
    """Retrieve a session's ConnectionError (clients vanish routinely); report anything else."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None and not isinstance(error, ConnectionError):
        context = {"message": "ScriptedMX session failed", "exception": error, "task": task}
        task.get_loop().call_exception_handler(context)


class _Hooks:
    """aiosmtpd handler: forwards the MAIL, RCPT and end-of-data hooks to the session."""

    # aiosmtpd looks hooks up by these exact names, hence the upper case.
    async def handle_MAIL(  # noqa: N802
        self,
        server: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        """Answer MAIL FROM."""
        return await server.on_mail(envelope, address, options)

    async def handle_RCPT(  # noqa: N802
        self,
        server: _ScriptedSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        """Answer RCPT TO."""
        return await server.on_rcpt(envelope, address, options)

    async def handle_DATA(  # noqa: N802
        self, server: _ScriptedSMTP, session: Session, envelope: Envelope
    ) -> str:
        """Answer the final dot."""
        return await server.on_eod(session, envelope)


class _ScriptedSMTP(SMTP):
    """One SMTP session of a ScriptedMX, applying its rules at each stage."""

    def __init__(self, mx: ScriptedMX, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            _Hooks(),
            # SIZE is advertised and enforced here, with the RFC 3463 code aiosmtpd lacks.
            data_size_limit=None,
            # Always accept UTF-8 commands; whether SMTPUTF8 is offered is checked at MAIL.
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=mx.hostname,
            tls_context=mx.tls_context,
            require_starttls=False,
            loop=loop,
        )
        self._mx = mx
        self._banner: str | None = None
        # aiosmtpd keeps these limits in a class-wide dict; keep ours per session (RFC 1870,
        # RFC 6531: SIZE and SMTPUTF8 lengthen MAIL FROM).
        self.command_size_limits = collections.defaultdict(lambda: 512, {"MAIL": 512 + 26 + 10})

    @override
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Track the session; called again after STARTTLS, which is not a new connection."""
        first = self._handler_coroutine is None
        super().connection_made(transport)
        if first and self._handler_coroutine is not None:
            self._mx.connections.add(self)
            self._handler_coroutine.add_done_callback(_retrieve_disconnect)

    @override
    def connection_lost(self, error: Exception | None) -> None:
        """Untrack the session and close its stream writer: a client that vanishes without
        QUIT (a killed worker) must not leave an unclosed StreamWriter behind."""
        writer = getattr(self, "_writer", None)
        super().connection_lost(error)
        if writer is not None:
            writer.close()
        self._mx.connections.discard(self)

    def abort(self) -> None:
        """Close the TCP connection at once, without flushing anything."""
        transport = self.transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        elif transport is not None:
            transport.close()

    @property
    def handler_task(self) -> asyncio.Task[None] | None:
        """The task running the SMTP dialogue."""
        return self._handler_coroutine

    async def _drop(self) -> NoReturn:
        """Abort the connection and park until connection_lost() cancels this handler."""
        self.abort()
        await asyncio.Event().wait()
        raise AssertionError("unreachable: connection_lost() cancels the handler")

    async def _drop_mid_data(self) -> NoReturn:
        """Accept DATA, wait for the first bytes of the message, then abort."""
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        await self._reader.read(1)
        await self._drop()

    async def _script(
        self,
        stage: str,
        *,
        rcpt: str | None = None,
        drop: Callable[[], Coroutine[Any, Any, NoReturn]] | None = None,
    ) -> _Rule | None:
        """Apply stall and drop rules of a stage; return the scripted reply, if any."""
        stall = self._mx.take(stage, "stall", rcpt)
        if stall is not None:
            self._mx.stalled += 1
            try:
                await asyncio.sleep(stall.seconds)
            finally:
                self._mx.stalled -= 1
        if self._mx.take(stage, "drop", rcpt) is not None:
            await (drop or self._drop)()
        return self._mx.take(stage, "reply", rcpt)

    @override
    async def push(self, status: AnyStr) -> None:
        """Send a reply, swapping in a scripted 2xx banner for the default one."""
        banner, self._banner = self._banner, None
        if banner is None:
            await super().push(status)
        else:
            await super().push(banner)

    @override
    async def _handle_client(self) -> None:
        """Apply CONNECT rules before aiosmtpd sends the banner and reads commands."""
        scripted = await self._script("CONNECT")
        if scripted is not None and not scripted.accepts:
            # A refusing banner (421/554) then closing is what busy real servers do.
            await super().push(scripted.line)
            assert self.transport is not None
            self.transport.close()
            return
        self._banner = scripted.line if scripted is not None else None
        await super()._handle_client()

    def _extensions(self) -> list[str]:
        """The EHLO keywords this MX currently offers."""
        mx = self._mx
        offered = [
            (f"SIZE {mx.size_limit}", mx.size_limit is not None),
            ("8BITMIME", mx.advertise_8bitmime),
            ("SMTPUTF8", mx.advertise_smtputf8),
            ("STARTTLS", self._starttls_offered()),
        ]
        return [keyword for keyword, on in offered if on] + ["HELP"]

    def _starttls_offered(self) -> bool:
        """STARTTLS is offered when configured and not yet in effect."""
        return (
            self._mx.tls_context is not None
            and self._mx.advertise_starttls
            and self._tls_protocol is None
        )

    @override
    async def smtp_EHLO(self, hostname: str) -> None:
        """Answer EHLO with the configured extensions, or a refusal."""
        if not hostname:
            await self.push("501 Syntax: EHLO hostname")
            return
        if self._mx.ehlo_refused:
            await self.push("502 5.5.2 Error: command not recognized")
            return
        scripted = await self._script("EHLO")
        if scripted is not None and not scripted.accepts:
            await self.push(scripted.line)
            return
        # A fresh envelope, as aiosmtpd's own EHLO does (RFC 5321 §4.1.4).
        self.envelope = self._create_envelope()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = hostname
        first = scripted.text if scripted is not None else self.hostname
        await self.push(_reply(250, [first, *self._extensions()]))

    @override
    async def smtp_HELO(self, hostname: str) -> None:
        """Answer HELO, unless scripted otherwise."""
        if hostname:
            scripted = await self._script("HELO")
            if scripted is not None and not scripted.accepts:
                await self.push(scripted.line)
                return
        await super().smtp_HELO(hostname)

    @override
    async def smtp_STARTTLS(self, arg: str) -> None:
        """Start TLS only when it is offered and not refused."""
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 Error: TLS already active")
        elif not self._starttls_offered():
            await self.push("502 5.5.1 Error: command not recognized")
        elif self._mx.starttls_refused:
            await self.push("454 4.7.0 TLS not available due to temporary reason")
        else:
            await super().smtp_STARTTLS(arg)

    def _data_would_start(self, arg: str | None) -> bool:
        """Whether aiosmtpd would answer this DATA command with 354."""
        ready = self.session is not None and self.session.host_name
        return bool(ready and not arg and self.envelope is not None and self.envelope.rcpt_tos)

    @override
    async def smtp_QUIT(self, arg: str) -> None:
        """Count a polite goodbye (RFC 5321 §4.1.1.10), then answer it as aiosmtpd does."""
        self._mx.quits += 1
        await super().smtp_QUIT(arg)

    @override
    async def smtp_DATA(self, arg: str) -> None:
        """Apply DATA rules to a valid DATA command; a drop happens mid-message."""
        if self._data_would_start(arg):
            scripted = await self._script("DATA", drop=self._drop_mid_data)
            if scripted is not None:
                await self.push(scripted.line)
                return
        await super().smtp_DATA(arg)

    def _refuse_mail_options(self, options: list[str]) -> str | None:
        """Refuse parameters of extensions not offered, and a declared SIZE over the limit."""
        mx = self._mx
        for option in options:
            keyword, _, value = option.partition("=")
            if keyword == "BODY" and value == "8BITMIME" and not mx.advertise_8bitmime:
                return "555 5.5.4 BODY=8BITMIME not supported"
            if keyword == "SMTPUTF8" and not mx.advertise_smtputf8:
                return "555 5.5.4 SMTPUTF8 not supported"
            if keyword == "SIZE" and mx.size_limit is not None and int(value) > mx.size_limit:
                return _SIZE_REFUSED
        return None

    async def on_mail(self, envelope: Envelope, address: str, options: list[str]) -> str:
        """Answer MAIL FROM (aiosmtpd has checked its syntax)."""
        refusal = self._refuse_mail_options(options)
        if refusal is not None:
            return refusal
        scripted = await self._script("MAIL")
        if scripted is not None and not scripted.accepts:
            return scripted.line
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return scripted.line if scripted is not None else "250 2.1.0 OK"

    async def on_rcpt(self, envelope: Envelope, address: str, options: list[str]) -> str:
        """Answer RCPT TO (aiosmtpd has checked its syntax)."""
        scripted = await self._script("RCPT", rcpt=address)
        if scripted is not None and not scripted.accepts:
            return scripted.line
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return scripted.line if scripted is not None else "250 2.1.5 OK"

    async def on_eod(self, session: Session, envelope: Envelope) -> str:
        """Answer the final dot: record the message unless refused."""
        data = envelope.original_content or b""
        if self._mx.size_limit is not None and len(data) > self._mx.size_limit:
            self._mx.transactions += 1
            return _SIZE_REFUSED
        scripted = await self._script("EOD")
        self._mx.transactions += 1
        if scripted is not None and not scripted.accepts:
            self._mx.refused_data.append(data)  # what the client sent, for retry tests
            return scripted.line
        self._mx.record(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=data,
                peer_host=self._mx.host,
                tls=self._tls_protocol is not None,
                mail_options=list(envelope.mail_options),
                helo=session.host_name or "",
            )
        )
        return scripted.line if scripted is not None else "250 2.0.0 OK: queued"


class ScriptedMX:
    """An SMTP server whose answers, delays and disconnections tests script per stage."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_context: ssl.SSLContext | None = None,
        hostname: str = "mx.fake.test",
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.tls_context = tls_context
        self.advertise_starttls = tls_context is not None
        self.advertise_8bitmime = True
        self.advertise_smtputf8 = True
        self.size_limit: int | None = None
        self.ehlo_refused = False
        self.starttls_refused = False
        self.messages: list[ReceivedMessage] = []
        self.refused_data: list[bytes] = []  # message data refused at the final dot
        self.sessions = 0
        self.transactions = 0
        self.stalled = 0  # sessions inside a stall right now (a transaction under way)
        self.quits = 0  # sessions the client ended with QUIT
        self.connections: set[_ScriptedSMTP] = set()
        self._rules: list[_Rule] = []
        self._arrived = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedMX:
        """Start serving."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        await self.stop()

    async def start(self) -> None:
        """Listen on host:port in the running loop; `port` holds the real port afterwards."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self._accept(loop), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _accept(self, loop: asyncio.AbstractEventLoop) -> _ScriptedSMTP:
        """Protocol factory: one call per accepted TCP connection."""
        self.sessions += 1
        return _ScriptedSMTP(self, loop)

    async def stop(self) -> None:
        """Stop listening and abort open sessions; safe to call twice."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        sessions = list(self.connections)
        for smtp in sessions:
            smtp.abort()
        tasks = [smtp.handler_task for smtp in sessions if smtp.handler_task is not None]
        if tasks:
            # connection_lost() cancels each handler; waiting means every socket is closed.
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()

    def _add(self, rule: _Rule) -> None:
        """Store a rule after checking it."""
        if rule.to is not None and rule.stage != "RCPT":
            raise ValueError("to= only applies to RCPT rules")
        if rule.times is not None and rule.times < 1:
            raise ValueError("times must be at least 1")
        self._rules.append(rule)

    def reply_at(
        self,
        stage: str,
        code: int,
        text: str = "scripted reply",
        *,
        to: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer `code text` at a stage instead of the normal reply (all or `times` times)."""
        stage = _stage(stage)
        if stage == "DATA" and code < 400:
            raise ValueError("a DATA rule replaces the 354, so it must refuse (4xx/5xx)")
        to_key = to.lower() if to is not None else None
        self._add(_Rule(stage, "reply", code=code, text=text, to=to_key, times=times))

    def drop_at(self, stage: str, *, to: str | None = None, times: int | None = None) -> None:
        """Abort the TCP connection at a stage; at DATA, after the first message bytes."""
        to_key = to.lower() if to is not None else None
        self._add(_Rule(_stage(stage), "drop", to=to_key, times=times))

    def stall_at(
        self, stage: str, seconds: float, *, to: str | None = None, times: int | None = None
    ) -> None:
        """Wait `seconds` before answering at a stage."""
        to_key = to.lower() if to is not None else None
        self._add(_Rule(_stage(stage), "stall", seconds=seconds, to=to_key, times=times))

    def refuse_starttls(self) -> None:
        """Keep offering STARTTLS but answer it with 454."""
        self.starttls_refused = True

    def take(self, stage: str, action: _Action, rcpt: str | None = None) -> _Rule | None:
        """Use up the first matching rule, if any."""
        for rule in self._rules:
            if rule.matches(stage, action, rcpt):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                return rule
        return None

    def record(self, message: ReceivedMessage) -> None:
        """Store an accepted message and wake wait_for()."""
        self.messages.append(message)
        self._arrived.set()

    def clear_rules(self) -> None:
        """Forget every scripted reply, drop and stall: back to answering normally."""
        self._rules.clear()

    def reset(self) -> None:
        """Forget messages, rules, counters and refuse_starttls(); extension flags stay."""
        self.messages.clear()
        self.refused_data.clear()
        self._rules.clear()
        self.sessions = 0
        self.transactions = 0
        self.starttls_refused = False

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least `count` messages arrived; TimeoutError otherwise."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.messages) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            got = len(self.messages)
            raise TimeoutError(f"{self.host}: expected {count} messages, got {got}") from None
        return list(self.messages)
