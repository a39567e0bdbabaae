"""`GET /readyz` and `GET /metrics` of the API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.accounts.cache import KeyCache
from app.core.db import Database
from app.core.errors import Forbidden, Unauthorized
from app.core.queue import Queue
from app.observability import access
from app.observability.exposition import CONTENT_TYPE, QueueProbe, process_metrics
from app.observability.health import readiness
from app.routing import StrictJsonRoute

router = APIRouter(tags=["health"], route_class=StrictJsonRoute)

READY_EXAMPLE = {
    "status": "unready",
    "checks": {
        "database": {"status": "ok", "detail": "reachable"},
        "migrations": {
            "status": "fail",
            "detail": "database at nothing; code expects 0001: run columba migrate",
        },
        "redis": {"status": "ok", "detail": "reachable"},
    },
}


@router.get(
    "/readyz",
    responses={
        200: {"description": "Ready: every check passed."},
        503: {
            "description": "Not ready: the failed checks say why.",
            "content": {"application/json": {"example": READY_EXAMPLE}},
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    """200 when the database answers, its schema is at the migrations' head and Redis answers;
    503 otherwise, with the status and detail of each check."""
    state = request.app.state
    database: Database = state.db
    queue: Queue = state.queue
    result = await readiness(database, queue.redis_url)
    return JSONResponse(result.body(), status_code=200 if result.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4.",
            "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
        },
        401: {"description": "No key, or an unknown one, from an address not allowed."},
        403: {"description": "The key lacks the metrics.read scope."},
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of every process of this API and the queue in the database.

    Allowed from COLUMBA_METRICS_ALLOW_IPS without a key; from anywhere else with a key that
    has the `metrics.read` scope (or full access)."""
    await _authorize(request)
    body = process_metrics() + await _queue_probe(request).render()
    return Response(body, media_type=CONTENT_TYPE)


async def _authorize(request: Request) -> None:
    """Pass an allowed address or a key with metrics.read; 401 or 403 otherwise."""
    state = request.app.state
    networks = getattr(state, "metrics_networks", None)
    if networks is None:
        networks = state.metrics_networks = access.networks_of(state.settings.metrics_allow_ips)
    if access.address_allowed(request.client.host if request.client else None, networks):
        return
    keys: KeyCache = state.keys
    allowed = await access.key_allows_metrics(keys, request.headers.get("authorization"))
    if allowed is None:
        raise Unauthorized("authorization required")
    if not allowed:
        raise Forbidden("access forbidden: this API key lacks the metrics.read scope")


def _queue_probe(request: Request) -> QueueProbe:
    """The app's probe (one per process: its cache is shared by every scrape)."""
    state: Any = request.app.state
    probe: QueueProbe | None = getattr(state, "queue_probe", None)
    if probe is None:
        probe = state.queue_probe = QueueProbe(state.db)
    return probe
