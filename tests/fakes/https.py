"""An HTTPS server on loopback with a trustme certificate: serves MTA-STS policies per Host
and takes TLS-RPT report POSTs (RFC 8461 §3.3, RFC 8460 §5.2)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.mx import free_port


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: the test process owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Served:
    """What the server answers for one Host: a body, a status, a media type, headers."""

    body: str
    status: int = 200
    media_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


class PolicyServer:
    """HTTPS on 127.0.0.1: `/.well-known/mta-sts.txt` as scripted per host name, and POSTs
    to `/tlsrpt` kept as decoded reports."""

    def __init__(self, ca: trustme.CA, names: list[str], directory: Path) -> None:
        self.port = free_port()
        self.policies: dict[str, Served] = {}
        self.reports: list[dict[str, Any]] = []
        self.report_types: list[str] = []
        self.fetches: list[str] = []
        pem = directory / "policy-server.pem"
        ca.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(pem)
        app = Starlette(
            routes=[
                Route("/.well-known/mta-sts.txt", self._policy),
                Route("/tlsrpt", self._report, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ssl_certfile=str(pem), ssl_keyfile=str(pem),
            log_level="critical", access_log=False,
        )  # fmt: skip
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    def serve_policy(self, domain: str, policy: str, **options: Any) -> None:
        """Serve `policy` at https://mta-sts.<domain>/.well-known/mta-sts.txt."""
        self.policies[f"mta-sts.{domain}"] = Served(policy, **options)

    async def _policy(self, request: Request) -> Response:
        host = request.headers.get("host", "").partition(":")[0]
        self.fetches.append(host)
        served = self.policies.get(host)
        if served is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(
            served.body, status_code=served.status, media_type=served.media_type,
            headers=served.headers,
        )  # fmt: skip

    async def _report(self, request: Request) -> Response:
        body = await request.body()
        self.report_types.append(request.headers.get("content-type", ""))
        self.reports.append(json.loads(gzip.decompress(body)))
        return Response(status_code=201)

    async def __aenter__(self) -> PolicyServer:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
