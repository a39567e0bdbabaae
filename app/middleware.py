"""ASGI middleware: refuse request bodies over the limit before they are read into memory;
inflate gzip-encoded bodies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# JSON carries attachments in base64 (4/3 of their size) plus some structure.
BASE64_OVERHEAD = 4 / 3
JSON_SLACK = 64 * 1024
# After a 413 the rest of the body is read and thrown away, up to this much for this long, so
# that a client still sending (urllib sends the whole body before it reads a reply) gets the
# 413 rather than a connection reset; past either bound the connection is closed.
DRAIN_MAX_BYTES = 256 * 1024 * 1024
DRAIN_MAX_SECONDS = 30.0


class BodyTooLarge(Exception):
    """The body grew past the limit while streaming in."""


def body_limit_for(max_message_size: int) -> int:
    """The largest request body a message of `max_message_size` can need."""
    return int(max_message_size * BASE64_OVERHEAD) + JSON_SLACK


class BodySizeLimit:
    """413 in SendGrid's shape for bodies over `max_bytes` (by Content-Length or as streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count what actually arrives."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(receive, send)  # before reading a byte of it
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send)
        except BodyTooLarge:
            await self._refuse(receive, send)

    async def _refuse(self, receive: Receive, send: Send) -> None:
        """413 in SendGrid's shape; the response ends once the rest of the body is drained."""
        body = json.dumps(
            {"errors": [{"message": "content too large", "field": None, "help": None}]}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        # Every byte of the reply is written now; the response stays open (more_body) only so
        # that the server keeps reading: a server that closes with unread data makes the
        # kernel reset the connection, and the client never sees the 413.
        await send({"type": "http.response.body", "body": body, "more_body": True})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_MAX_SECONDS):
                await _drain(receive)
        await send({"type": "http.response.body", "body": b""})


async def _drain(receive: Receive) -> None:
    """Read the request body to its end (or DRAIN_MAX_BYTES), keeping none of it."""
    drained = 0
    while drained <= DRAIN_MAX_BYTES:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))


class RequestDecoding(Exception):
    """A Content-Encoding the body does not live up to, or one not served."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


ON_BEHALF_OF_REFUSED = (
    "on-behalf-of is not supported: Columba has no subusers. Give each tenant an account of its "
    "own and send with that account's API key"
)


class GzipRequests:
    """Bodies sent with `Content-Encoding: gzip`, as SendGrid accepts them, inflated as they
    stream in; the inflated size is held to `max_bytes` too (a small bomb is a 413, not a
    gigabyte in memory). Other encodings are 415; a body that is not gzip is 400. Requests
    `on-behalf-of` a subuser are 400: found in the same pass over the headers."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass requests without an encoding through; inflate gzip ones."""
        encoding, on_behalf_of = (
            _headers_of_note(scope) if scope["type"] == "http" else (b"", False)
        )
        if on_behalf_of:
            # SendGrid's subusers: never ignored (mail would go out as the parent account).
            await _error(send, 400, ON_BEHALF_OF_REFUSED, field="on-behalf-of")
            return
        if encoding in (b"", b"identity"):
            await self.app(scope, receive, send)
            return
        if encoding not in (b"gzip", b"x-gzip"):
            await _error(send, 415, f"Content-Encoding {encoding.decode('latin-1')} is not "
                         "supported: send the body as is or gzip-compressed")  # fmt: skip
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(_without_encoding(scope), self._inflating(receive), tracking_send)
        except RequestDecoding as exc:
            if started:
                raise
            await _error(send, exc.status, exc.message)

    def _inflating(self, receive: Receive) -> Receive:
        """`receive` with each body chunk inflated (RFC 1952), at most max_bytes in all."""
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        produced = 0

        async def inflating_receive() -> Message:
            nonlocal produced
            message = await receive()
            if message["type"] != "http.request":
                return message
            more = message.get("more_body", False)
            try:
                data = inflater.decompress(message.get("body", b""), self.max_bytes + 1 - produced)
                if not more:
                    data += inflater.flush()
            except zlib.error as exc:
                raise RequestDecoding(400, "the body is not valid gzip") from exc
            produced += len(data)
            if produced > self.max_bytes or inflater.unconsumed_tail:
                raise BodyTooLarge()
            if not more and not inflater.eof:
                raise RequestDecoding(400, "the gzip body ends before its end")
            return {"type": "http.request", "body": data, "more_body": more}

        return inflating_receive


def _headers_of_note(scope: Scope) -> tuple[bytes, bool]:
    """The request's Content-Encoding, lower-cased ('' without one), and whether it has an
    on-behalf-of header: one pass over the headers."""
    encoding, on_behalf_of = b"", False
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            encoding = bytes(value).strip().lower()
        elif name == b"on-behalf-of":
            on_behalf_of = True
    return encoding, on_behalf_of


def _without_encoding(scope: Scope) -> Scope:
    """The scope as the app sees an inflated body: no Content-Encoding, no Content-Length."""
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name not in (b"content-encoding", b"content-length")
    ]
    return {**scope, "headers": headers}


async def _error(send: Send, status: int, message: str, *, field: str | None = None) -> None:
    """An error in SendGrid's shape."""
    body = json.dumps({"errors": [{"message": message, "field": field, "help": None}]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
