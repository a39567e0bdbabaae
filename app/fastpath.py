"""The hot routes, served straight from the ASGI stack: the two send routes, and the
tracking and unsubscribe links (matched by path prefix: their last segment is a token).

POST /v1/send and POST /v3/mail/send carry nearly every request a busy Columba gets. Through
FastAPI's router each request also paid for matching every route in turn, the exception
middleware, the exit stack and the route wrapper: about a seventh of a send's CPU
(bench/api_cpu.py). Here they are matched by method and path and their endpoints called
directly, with the same request class (strict JSON, no NUL in the URL), the same exception
handlers and the same middleware around them (body size limit, rate-limit headers). The
routes stay registered with FastAPI for the OpenAPI description and anything not matched here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.observability.http import note_route
from app.routing import StrictJsonRequest, refuse_nul_in_url

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class FastPath:
    """Serves `routes` ((method, path) → endpoint) and `prefixes` ((method, prefix) →
    endpoint, for paths of one more segment after the prefix) itself; everything else goes
    on to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[tuple[str, str], Endpoint],
        prefixes: Mapping[tuple[str, str], Endpoint] | None = None,
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.prefixes = dict(prefixes or {})

    def _match(self, method: str, path: str) -> tuple[Endpoint, str] | None:
        """The endpoint for this method and path, if it is one served here, and its route
        template (a prefix route's last segment is a token: never logged, never a label)."""
        endpoint = self.routes.get((method, path))
        if endpoint is not None or not self.prefixes:
            return (endpoint, path) if endpoint is not None else None
        head, slash, last = path.rpartition("/")
        if not last:
            return None
        endpoint = self.prefixes.get((method, head + slash))
        return (endpoint, head + slash + "{token}") if endpoint is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a matched route; pass anything else on."""
        matched = self._match(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if matched is None:
            try:
                await self.app(scope, receive, send)
            finally:  # the router put the route it matched in the scope
                note_route(scope, getattr(scope.get("route"), "path", None))
            return
        endpoint, template = matched
        note_route(scope, template)
        request = StrictJsonRequest(scope, receive)
        try:
            refuse_nul_in_url(request)
            response = await endpoint(request)
        except Exception as exc:
            handler = _handler_for(request, exc)
            if handler is None:
                raise  # the server error middleware logs it and answers 500, as for any route
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(request: Request, exc: Exception) -> Handler | None:
    """The app's exception handler for `exc`, as Starlette would choose it (the most specific
    class first); None for the catch-all, which belongs to the server error middleware."""
    handlers: Mapping[type[Exception], Handler] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None
