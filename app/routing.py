"""The route class of every router: bodies parsed as strict JSON, no NUL in the URL.

One mechanism at the edge instead of a check per field: whatever a request carries in its
JSON body (lone surrogates, NUL, NaN, numbers too long, nesting too deep) or its path and
query (NUL) is refused with 400 before any route runs, so nothing stored can fail to be
written, read or sent later.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from app.core import strict_json
from app.core.errors import BadRequest, RefusedBody

M = TypeVar("M", bound=BaseModel)


class StrictJsonRequest(Request):
    """A request whose `json()` is `strict_json.loads`."""

    async def json(self) -> Any:
        """The body as strict JSON; RefusedBody (400) for what must not be stored."""
        if not hasattr(self, "_json"):
            try:
                self._json = strict_json.loads(await self.body())
            except strict_json.JsonRefused as exc:
                # FastAPI turns any other exception raised here into a bare 400.
                raise RefusedBody(exc.message, exc.field) from exc
        return self._json


class StrictJsonRoute(APIRoute):
    """An APIRoute that reads bodies with StrictJsonRequest and refuses NUL in the URL."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a StrictJsonRequest."""
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            refuse_nul_in_url(request)
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler


def refuse_nul_in_url(request: Request) -> None:
    """400 for a NUL in the path or the query: PostgreSQL cannot compare text holding one.

    (Lone surrogates cannot arrive this way: the URL is decoded as UTF-8 with replacement.)"""
    if "\x00" in request.scope["path"]:
        raise BadRequest(strict_json.NUL_REFUSED, "path")
    if b"%00" not in request.scope.get("query_string", b""):
        return
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise BadRequest(strict_json.NUL_REFUSED, name.replace("\x00", "") or None)


async def json_body(request: Request) -> Any:
    """The body as strict JSON, for routes that parse their own body (the send routes, to
    skip FastAPI's per-request dependency solving); errors as FastAPI's own body parsing."""
    raw = await request.body()
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return strict_json.loads(raw)
    except strict_json.JsonRefused as exc:
        raise RefusedBody(exc.message, exc.field) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", position),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": str(exc)},
                }
            ]
        ) from exc


def validated(model: type[M], document: Any) -> M:
    """`document` as a `model`; a 400 naming each field otherwise (as FastAPI would)."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc
