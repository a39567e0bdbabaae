"""The outermost ASGI middleware: a request id for every request (the client's X-Request-Id
when sane, else ours, returned in the response), the request counted and timed by route
template, and, with JSON logs, a line per request."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client.metrics import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import metrics
from app.observability.logs import REQUEST_ID, request_id_from

log = logging.getLogger("columba.http")

# Scope key of the mutable record of a request: middlewares further in may copy the scope
# (GzipRequests does), so what they learn goes into this shared object, not the scope.
OBSERVED = "columba.observed"
UNMATCHED = "<unmatched>"  # no route answered: a 404, or a refusal before routing (413, 415)
# Any other method a client makes up is counted as OTHER: the label stays bounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Observed:
    """What is learnt about a request on its way in: its route template and its account."""

    __slots__ = ("account_id", "route")

    def __init__(self) -> None:
        self.route: str | None = None
        self.account_id: str | None = None


def note_route(scope: Scope, template: str | None) -> None:
    """Record the route template that served the request."""
    observed: Observed | None = scope.get(OBSERVED)
    if observed is not None and template is not None:
        observed.route = template


def note_account(scope: Scope, account_id: str) -> None:
    """Record the account whose key authenticated the request."""
    observed: Observed | None = scope.get(OBSERVED)
    if observed is not None:
        observed.account_id = account_id


class RequestObserver:
    """Request id, metrics and (if `log_requests`) a log line for every HTTP request."""

    def __init__(self, app: ASGIApp, *, log_requests: bool) -> None:
        self.app = app
        self.log_requests = log_requests
        # Label children by key: labels() costs a lock and a tuple check on every call.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._timers: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, then count and log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        request_id = request_id_from(_header(scope, b"x-request-id"))
        token = REQUEST_ID.set(request_id)
        observed = scope[OBSERVED] = Observed()
        header = (b"x-request-id", request_id.encode())
        status = 500  # what the client sees if the app fails before answering

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            self._finish(scope, observed, status, time.perf_counter() - began, request_id)
            REQUEST_ID.reset(token)

    def _finish(
        self, scope: Scope, observed: Observed, status: int, elapsed: float, request_id: str
    ) -> None:
        """Count, time and log the finished request."""
        route = observed.route or UNMATCHED
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        counter = self._counters.get((route, method, status))
        if counter is None:
            counter = metrics.HTTP_REQUESTS.labels(route, method, str(status))
            self._counters[(route, method, status)] = counter
        timer = self._timers.get((route, method))
        if timer is None:
            timer = self._timers[(route, method)] = metrics.HTTP_DURATION.labels(route, method)
        counter.inc()
        timer.observe(elapsed)
        if self.log_requests:
            log.info(
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    **_fields(route, method, status, elapsed, observed.account_id),
                    "request_id": request_id,
                },
            )


def _fields(
    route: str, method: str, status: int, elapsed: float, account_id: str | None
) -> dict[str, Any]:
    """The request line's fields (never the raw path: it may carry tokens)."""
    return {
        "event": "http_request",
        "route": route,
        "method": method,
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
        "account_id": account_id,
    }


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (the first), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
