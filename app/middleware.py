"""ASGI middleware: refuse request bodies over the limit before they are read into memory."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# JSON carries attachments in base64 (4/3 of their size) plus some structure.
BASE64_OVERHEAD = 4 / 3
JSON_SLACK = 64 * 1024


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
            await self._refuse(send)
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
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"errors": [{"message": "content too large", "field": None, "help": None}]}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
