"""OpenAPI details: SendGrid-shaped error responses instead of FastAPI's 422 default."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel


class ErrorItemModel(BaseModel):
    """One error."""

    message: str
    field: str | None = None
    help: str | None = None


class ErrorResponse(BaseModel):
    """Every error body: `{"errors": [{"message", "field", "help"}]}`."""

    errors: list[ErrorItemModel]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: these statuses answer in the error shape."""
    descriptions = {
        400: "Invalid request",
        401: "Missing, unknown or revoked API key",
        403: "The key lacks the scope, or the account may not do this",
        404: "Not found for this account",
        409: "Conflicts with a request in progress",
        413: "Content too large",
        422: "Cannot be applied",
        429: "Too many requests",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}


def install_openapi(app: FastAPI) -> None:
    """Generate the schema without FastAPI's 422 validation responses: we answer 400."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _drop_validation_422(document)
            _declare_bearer_auth(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def _drop_validation_422(document: dict[str, Any]) -> None:
    for path in document.get("paths", {}).values():
        for operation in path.values():
            response = operation.get("responses", {}).get("422", {})
            ref = str(response.get("content", {}).get("application/json", {}).get("schema", {}))
            if "HTTPValidationError" in ref:
                del operation["responses"]["422"]
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def _declare_bearer_auth(document: dict[str, Any]) -> None:
    """Every /v1 and /v3 operation takes `Authorization: Bearer <API key>`."""
    components = document.setdefault("components", {})
    components["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (SG.…)."}
    }
    for path, operations in document.get("paths", {}).items():
        if path.startswith(("/v1/", "/v3/")):
            for operation in operations.values():
                operation["security"] = [{"apiKey": []}]
