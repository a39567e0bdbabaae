"""ASGI middleware: refuse request bodies over the limit before they are read into memory."""

from __future__ import annotations

import asyncio
import contextlib
import json

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
