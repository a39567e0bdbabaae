"""SendGrid's X-SMTPAPI header: JSON options for a message submitted over SMTP.

Columba honours `category`, `unique_args`, `send_at` and `asm_group_id`, as SendGrid does. Keys
that would change who receives what (`to`, `sub`, `section`, `send_each_at`) and enabled
`filters` (tracking, footers, templates) are refused rather than ignored: ignoring them would
deliver different mail from what the sender asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.common.fields import no_line_breaks
from app.core.durations import format_duration
from app.messages.schemas import MAX_CATEGORIES, MAX_CATEGORY_LENGTH

HEADER = "x-smtpapi"
MAX_UNIQUE_ARGS_BYTES = 10_000  # SendGrid's limit for unique_args
# Settings of features Columba lacks that do not change the mail (SendGrid IP pools).
_IGNORED = frozenset({"ip_pool"})
# Personalisation of SendGrid's legacy SMTP API: refused, as a different message would go out.
_UNSUPPORTED = frozenset({"to", "sub", "section", "send_each_at"})
_HONOURED = ("category", "unique_args", "send_at", "asm_group_id", "filters")

Scalar = str | int | float | bool


class SmtpApiError(ValueError):
    """The X-SMTPAPI header cannot be honoured; the message says why."""


@dataclass(frozen=True, slots=True)
class SmtpApiOptions:
    """What an X-SMTPAPI header asks for."""

    categories: tuple[str, ...] = ()
    unique_args: dict[str, Scalar] = field(default_factory=dict)
    send_at: datetime | None = None  # None: send now
    asm_group_id: int | None = None


def parse(value: str, *, now: datetime, max_ahead: timedelta) -> SmtpApiOptions:
    """Parse the (unfolded) header value; SmtpApiError says what is wrong. `send_at` may lie
    `max_ahead` ahead at most (COLUMBA_MAX_SCHEDULE_AHEAD, as for the send APIs)."""
    try:
        document = json.loads(value)
    except ValueError as exc:
        raise SmtpApiError(f"not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise SmtpApiError("must be a JSON object")
    _check_keys(document)
    return SmtpApiOptions(
        categories=_categories(document.get("category")),
        unique_args=_unique_args(document.get("unique_args")),
        send_at=_send_at(document.get("send_at"), now=now, max_ahead=max_ahead),
        asm_group_id=_asm_group_id(document.get("asm_group_id")),
    )


def _check_keys(document: Mapping[str, Any]) -> None:
    """Refuse unknown keys, non-empty personalisation keys and enabled filters."""
    for key, value in document.items():
        if key in _UNSUPPORTED and value not in (None, [], {}):
            raise SmtpApiError(
                f"{key!r} (per-recipient personalisation) is not supported; send one message "
                "per recipient, or use POST /v1/send"
            )
        if key not in (*_HONOURED, *_IGNORED, *_UNSUPPORTED):
            raise SmtpApiError(f"unknown key {key!r}; supported: {', '.join(_HONOURED)}")
    _check_filters(document.get("filters"))


def _check_filters(filters: object) -> None:
    """Filters may only switch features off: Columba applies none of them."""
    if filters in (None, {}):
        return
    if not isinstance(filters, dict):
        raise SmtpApiError("'filters' must be an object")
    for name, config in filters.items():
        settings = config.get("settings", {}) if isinstance(config, dict) else None
        enable = settings.get("enable", 0) if isinstance(settings, dict) else None
        if str(enable) not in {"0", "False", "false"}:
            raise SmtpApiError(f"filter {name!r} is not supported (only disabling it is)")


def _categories(value: object) -> tuple[str, ...]:
    """`category` is a string or a list of strings (SendGrid: at most 10, 255 chars each)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise SmtpApiError("'category' must be a string or a list of strings")
    if len(items) > MAX_CATEGORIES:
        raise SmtpApiError(f"at most {MAX_CATEGORIES} categories")
    for item in items:
        if not item or len(item) > MAX_CATEGORY_LENGTH:
            raise SmtpApiError(f"a category must have 1 to {MAX_CATEGORY_LENGTH} characters")
        _no_line_breaks(item, "category")
    return tuple(dict.fromkeys(items))


def _unique_args(value: object) -> dict[str, Scalar]:
    """`unique_args`: an object of scalar values, at most 10,000 bytes of JSON."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SmtpApiError("'unique_args' must be an object")
    for key, item in value.items():
        if isinstance(item, dict | list) or item is None:
            raise SmtpApiError(f"unique_args.{key} must be a string, number or boolean")
        _no_line_breaks(key, "unique_args")
    if len(json.dumps(value).encode()) > MAX_UNIQUE_ARGS_BYTES:
        raise SmtpApiError(f"'unique_args' is larger than {MAX_UNIQUE_ARGS_BYTES} bytes")
    return dict(value)


def _send_at(value: object, *, now: datetime, max_ahead: timedelta) -> datetime | None:
    """`send_at`: a Unix time at most `max_ahead` ahead; a past time means now."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SmtpApiError("'send_at' must be a Unix timestamp (an integer)")
    when = datetime.fromtimestamp(value, UTC)
    if when > now + max_ahead:
        raise SmtpApiError(f"'send_at' may be at most {format_duration(max_ahead)} ahead")
    return when if when > now else None


def _asm_group_id(value: object) -> int | None:
    """`asm_group_id`: the unsubscribe group, a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SmtpApiError("'asm_group_id' must be a positive integer")
    return value


def _no_line_breaks(value: str, name: str) -> None:
    """Refuse CR, LF and NUL, as the HTTP API does for the same fields."""
    try:
        no_line_breaks(value)
    except ValueError as exc:
        raise SmtpApiError(f"{name}: {exc}") from exc
