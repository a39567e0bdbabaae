"""Log output: text for people, or one JSON object per line (COLUMBA_LOG_FORMAT=json), and the
request id that ties a request's lines, events and delivery logs together."""

from __future__ import annotations

import json
import logging
import re
import secrets
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The id of the request (or SMTP session) being served; None outside one.
REQUEST_ID: ContextVar[str | None] = ContextVar("columba_request_id", default=None)

# A client's X-Request-Id is kept when it is short and plain (it lands in logs and events);
# anything else is replaced by one of ours.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,63}")

# What every LogRecord carries; anything else on a record came from `extra=` and is a field.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def request_id_from(header: str | None) -> str:
    """The client's id when it is sane, else a new one (128 random bits, hex)."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return secrets.token_hex(16)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request id in force,
    and every `extra=` field."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        # A record formatted later (a test's capture) names its request itself; one formatted
        # as it is logged (a handler) also finds it in the context of the request's task.
        request_id = record.__dict__.get("request_id") or REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str, ensure_ascii=False)


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter COLUMBA_LOG_FORMAT names."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(*, level: str, log_format: str) -> None:
    """Root logging to stderr in the chosen format, as logging.basicConfig does it (nothing
    changes when the root logger has handlers already: an embedding program chose them)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def uvicorn_config(*, level: str, log_format: str) -> dict[str, Any]:
    """uvicorn's `log_config`: applied in every worker process it starts, so each of them logs
    in the chosen format (configure() in the parent does not reach spawned workers)."""
    formatter = (
        {"()": "app.observability.logs.JsonFormatter"}
        if log_format == "json"
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"columba": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "columba"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},  # ours: columba.http
            "arq.worker": {"level": "WARNING"},
        },
    }
