"""API errors: exception classes carrying a status, rendered in SendGrid's error shape.

Every error body is `{"errors": [{"message": ..., "field": ..., "help": ...}]}`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.db import database_unavailable
from app.core.strict_json import scrubbed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ErrorItem:
    """One entry of the `errors` list."""

    message: str
    field: str | None = None
    help: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The JSON form."""
        return {"message": self.message, "field": self.field, "help": self.help}


class ApiError(Exception):
    """An error answered to the client; subclasses fix the status code."""

    status_code = 400

    def __init__(
        self,
        message: str,
        field: str | None = None,
        *,
        errors: Sequence[ErrorItem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.errors = list(errors) or [ErrorItem(message, field)]
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    """400: the request is malformed or invalid."""


class Unauthorized(ApiError):
    """401: no valid credentials."""

    status_code = 401


class Forbidden(ApiError):
    """403: valid credentials, not allowed to do this."""

    status_code = 403


class NotFound(ApiError):
    """404: nothing there for this account."""

    status_code = 404


class Conflict(ApiError):
    """409: the request conflicts with one in progress."""

    status_code = 409


class PayloadTooLarge(ApiError):
    """413: the message is over the size limit."""

    status_code = 413


class Unprocessable(ApiError):
    """422: well-formed but cannot be applied."""

    status_code = 422


class TooManyRequests(ApiError):
    """429: over the rate limit."""

    status_code = 429


class RefusedBody(StarletteHTTPException):
    """400 for a body refused while FastAPI reads it (app.routing.StrictJsonRequest): there,
    FastAPI lets only HTTP exceptions through; any other becomes a 400 without a reason."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(400, message)
        self.item = ErrorItem(message, field)


def error_response(
    status_code: int, errors: Sequence[ErrorItem], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON response in SendGrid's error shape."""
    # Messages may quote what the client sent: scrubbed, so that any error can be sent.
    body = {"errors": [scrubbed(item.as_dict()) for item in errors]}
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


def field_path(location: Sequence[int | str]) -> str | None:
    """Pydantic's error location as SendGrid's dotted path (`personalizations.0.to.1.email`)."""
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _validation_message(error: Mapping[str, Any]) -> str:
    """A readable message for one pydantic error, without pydantic's internal prefixes."""
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


async def _handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.errors, exc.headers)


async def _handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [
        ErrorItem(_validation_message(error), field_path(error.get("loc", ())))
        for error in exc.errors()
    ]
    return error_response(400, items)


async def _handle_refused_body(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RefusedBody)
    return error_response(400, [exc.item])


async def _handle_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, [ErrorItem(str(exc.detail).lower())], exc.headers)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, [ErrorItem("internal server error")])


async def _handle_database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 when the database is unreachable or the connection was lost (a restart, a
    failover): nothing of the request was committed, and a retry gets a fresh connection
    (the pool was invalidated). Without a pre-ping (app/core/db.py) this is how a dead pooled
    connection shows; a refused connection comes as an OSError (ARCHITECTURE §5: 503, never
    500, while the database is unreachable)."""
    if not database_unavailable(exc):
        return await _handle_unexpected(request, exc)
    log.warning("database connection lost on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503, [ErrorItem("the database is unavailable; retry")], {"Retry-After": "1"}
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, expected or not, in SendGrid's shape."""
    app.add_exception_handler(ApiError, _handle_api_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(RefusedBody, _handle_refused_body)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(DBAPIError, _handle_database_error)
    app.add_exception_handler(OSError, _handle_database_error)
    app.add_exception_handler(Exception, _handle_unexpected)
