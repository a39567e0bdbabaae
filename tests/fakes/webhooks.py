"""A scriptable HTTP receiver on loopback, playing a customer's webhook endpoint in tests.

Served by uvicorn; answers each POST as scripted (a status, a stall past the sender's
timeout, a redirect) and records every request it saw, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from tests.fakes.mx import free_port


@dataclass
class ReceivedRequest:
    """One POST as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    stalled: bool = False  # held past the sender's patience (answered late, if at all)

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


@dataclass
class _Answer:
    status: int
    stall: float = 0.0
    location: str | None = None
    hang: bool = False
    path: str | None = None


@dataclass
class WebhookReceiver:
    """Records POSTs; answers from a script, 200 when the script is empty."""

    host: str
    port: int = field(default_factory=free_port)
    requests: list[ReceivedRequest] = field(default_factory=list)
    most_at_once: int = 0  # the most requests it held at the same time
    _script: deque[_Answer] = field(default_factory=deque)
    _holding: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        """http://host:port."""
        return f"http://{self.host}:{self.port}"

    def answer(self, status: int, *, times: int = 1, path: str | None = None) -> None:
        """Answer the next `times` requests (to `path`, if given) with `status`."""
        self._script.extend(_Answer(status, path=path) for _ in range(times))

    def stall(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next requests for `seconds`, then answer 200 (slow but in time)."""
        self._script.extend(_Answer(200, stall=seconds) for _ in range(times))

    def hang(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next requests for `seconds`, past the sender's timeout."""
        self._script.extend(_Answer(200, stall=seconds, hang=True) for _ in range(times))

    def redirect(self, location: str, *, status: int = 302, times: int = 1) -> None:
        """Answer with a redirect to `location`."""
        self._script.extend(_Answer(status, location=location) for _ in range(times))

    @property
    def accepted(self) -> list[ReceivedRequest]:
        """The requests answered 2xx."""
        return [r for r in self.requests if 200 <= r.answered < 300 and not r.stalled]

    async def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedRequest]:
        """Until `count` requests arrived."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.requests

    def _next_answer(self, path: str) -> _Answer:
        """The first scripted answer for this path (or any path); 200 when none."""
        for answer in self._script:
            if answer.path in (None, path):
                self._script.remove(answer)
                return answer
        return _Answer(200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app."""
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self._holding += 1
        self.most_at_once = max(self.most_at_once, self._holding)
        try:
            await self._answer(scope, send, body)
        finally:
            self._holding -= 1

    async def _answer(self, scope: Scope, send: Send, body: bytes) -> None:
        """Record the request and answer it as scripted."""
        answer = self._next_answer(scope["path"])
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        received = ReceivedRequest(scope["path"], headers, body, answer.status, answer.hang)
        self.requests.append(received)
        self._arrived.set()
        if answer.stall:
            await asyncio.sleep(answer.stall)
        out = [(b"content-type", b"text/plain")]
        if answer.location:
            out.append((b"location", answer.location.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        await send({"type": "http.response.body", "body": b"ok" if answer.status < 300 else b"no"})


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals to the test process."""
        yield


@contextlib.asynccontextmanager
async def running_receiver(
    host: str = "127.0.0.7", port: int | None = None, *, tls_pem: Path | None = None
) -> AsyncIterator[WebhookReceiver]:
    """A receiver served on host:port (a free one by default) until the block ends; over
    TLS with the key and certificate chain in `tls_pem` when given."""
    receiver = WebhookReceiver(host, port) if port else WebhookReceiver(host)
    config = uvicorn.Config(
        receiver,
        host=host,
        port=receiver.port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
        ssl_certfile=tls_pem,
        ssl_keyfile=tls_pem,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
