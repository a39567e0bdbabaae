"""The metrics port of `columba worker`, `columba smtp` and `columba inbound`: GET /metrics,
/healthz and /readyz over HTTP/1.1 (h11), one request per connection.

A small server of its own rather than uvicorn: it runs inside processes that own their signal
handling (arq, the SMTP listeners), and answers three fixed paths."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import h11

from app.accounts.cache import KeyCache
from app.core.config import Settings
from app.core.db import Database
from app.dev.embedded_redis import redis_url_for
from app.observability import access
from app.observability.exposition import CONTENT_TYPE, QueueProbe, process_metrics
from app.observability.health import readiness

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0
MAX_REQUEST_BYTES = 16 * 1024
Answer = tuple[int, str, bytes]


class ObservabilityServer:
    """Serves a process's metrics and health on a port of its own."""

    def __init__(self, settings: Settings, *, queue: bool = False) -> None:
        self.settings = settings
        self.database = Database(settings)
        self.redis_url = redis_url_for(settings.redis_url, settings.var_dir)
        self.keys = KeyCache(self.database, ttl=settings.auth_cache_ttl.total_seconds())
        self.networks = access.networks_of(settings.metrics_allow_ips)
        self.queue = QueueProbe(self.database) if queue else None
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port bound (`port` 0 picks one)."""
        self._server = await asyncio.start_server(self._connection, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%s/metrics", host, self.port)
        return self.port

    async def close(self) -> None:
        """Stop listening and release the database."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.keys.close()
        await self.database.dispose()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request, answer it, close."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                request = await _read_request(conn, reader)
                if request is None:
                    return
                peer = writer.get_extra_info("peername")
                status, content_type, body = await self.answer(request, peer[0] if peer else None)
                headers = [
                    ("content-type", content_type),
                    ("content-length", str(len(body))),
                    ("connection", "close"),
                ]
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
                writer.write(conn.send(h11.Data(data=body)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
        except (h11.ProtocolError, TimeoutError, ConnectionError):
            pass  # a broken or slow client: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def answer(self, request: h11.Request, client: str | None) -> Answer:
        """The response to one request."""
        path = request.target.decode("latin-1").split("?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            return _error(405, "only GET is served here")
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path == "/readyz":
            state = await readiness(self.database, self.redis_url)
            return _json(200 if state.ready else 503, state.body())
        if path == "/metrics":
            return await self._metrics(request, client)
        return _error(404, "not found: this port serves /metrics, /healthz and /readyz")

    async def _metrics(self, request: h11.Request, client: str | None) -> Answer:
        """The exposition, for an allowed address or a key with `metrics.read`."""
        if not access.address_allowed(client, self.networks):
            authorization = dict(request.headers).get(b"authorization", b"").decode("latin-1")
            allowed = await access.key_allows_metrics(self.keys, authorization)
            if allowed is None:
                return _error(401, "authorization required")
            if not allowed:
                return _error(403, "access forbidden: this API key lacks the metrics.read scope")
        body = process_metrics()
        if self.queue is not None:
            body += await self.queue.render()
        return 200, CONTENT_TYPE, body


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    """The request line and headers (a body, if any, is not needed); None if the peer left."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(4096))
            continue
        if isinstance(event, h11.Request):
            return event
        if isinstance(event, h11.ConnectionClosed):
            return None


def _json(status: int, body: object) -> Answer:
    """A JSON answer."""
    return status, "application/json", json.dumps(body).encode()


def _error(status: int, message: str) -> Answer:
    """An error in SendGrid's shape, as the API gives them."""
    return _json(status, {"errors": [{"message": message, "field": None, "help": None}]})
