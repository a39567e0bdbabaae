"""OpenAPI details: SendGrid-shaped error responses instead of FastAPI's 422 default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema


class ErrorItemModel(BaseModel):
    """One error."""

    message: str
    field: str | None = None
    help: str | None = None


class ErrorResponse(BaseModel):
    """Every error body: `{"errors": [{"message", "field", "help"}]}`."""

    errors: list[ErrorItemModel]


IDEMPOTENCY_KEY: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Send a request once however often it is retried: the same key "
            "with the same body returns the first answer (same ids) and sends nothing again; "
            "with a different body 422; while the first is still running 409. Keys are kept "
            "for COLUMBA_IDEMPOTENCY_TTL (24 hours).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
    ]
}


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


def install_openapi(app: FastAPI, extra_models: Sequence[type[BaseModel]] = ()) -> None:
    """Generate the schema without FastAPI's 422 validation responses: we answer 400.

    `extra_models` are request bodies that routes parse themselves (to answer in SendGrid's
    words) and reference from `openapi_extra`."""

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
            _declare_common_errors(document)
            _add_models(document, extra_models)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def _add_models(document: dict[str, Any], models: Sequence[type[BaseModel]]) -> None:
    if not models:
        return
    _, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(definitions.get("$defs", {}))


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


def _declare_common_errors(document: dict[str, Any]) -> None:
    """What every /v1 and /v3 operation may answer besides its own statuses: 400 (any route
    refuses NUL in its URL and a body that is not strict JSON), 401 and 403 (keys and scopes),
    429 (rate limit), 404 when the path names something, 413 when there is a body."""
    for path, operations in document.get("paths", {}).items():
        if not path.startswith(("/v1/", "/v3/")):
            continue
        for operation in operations.values():
            codes = [400, 401, 403, 429]
            codes += [404] if "{" in path else []
            codes += [413] if "requestBody" in operation else []
            responses = operation.setdefault("responses", {})
            for code, response in _error_responses(codes).items():
                responses.setdefault(str(code), response)
            operation["responses"] = dict(sorted(responses.items()))


def _error_responses(codes: Sequence[int]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI response objects for error `codes`, in SendGrid's error shape."""
    schema = {"$ref": "#/components/schemas/ErrorResponse"}
    return {
        code: {
            "description": spec["description"],
            "content": {"application/json": {"schema": schema}},
        }
        for code, spec in errors(*codes).items()
    }
