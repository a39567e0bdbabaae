"""SendGrid's X-SMTPAPI header: JSON options for a message submitted over SMTP.

Columba honours `category`, `unique_args`, `send_at` and `asm_group_id`, as SendGrid does. Keys
that would change who receives what (`to`, `sub`, `section`, `send_each_at`) and enabled
`filters` (tracking, footers, templates) are refused rather than ignored: ignoring them would
deliver different mail from what the sender asked for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.common.fields import no_line_breaks
from app.core.durations import format_duration
from app.messages.schemas import MAX_CATEGORIES, MAX_CATEGORY_LENGTH

HEADER = "x-smtpapi"
MAX_UNIQUE_ARGS_BYTES = 10_000  # SendGrid's limit for unique_args
MAX_ASM_GROUP_ID = 2**31 - 1  # messages.asm_group_id is a 32-bit INTEGER
# The deepest document that means anything (filters.<name>.settings.enable) is 4 levels deep.
MAX_DEPTH = 8
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
    document = _load(value)
    if not isinstance(document, dict):
        raise SmtpApiError("must be a JSON object")
    _check_storable(document, "", depth=0)
    _check_keys(document)
    return SmtpApiOptions(
        categories=_categories(document.get("category")),
        unique_args=_unique_args(document.get("unique_args")),
        send_at=_send_at(document.get("send_at"), now=now, max_ahead=max_ahead),
        asm_group_id=_asm_group_id(document.get("asm_group_id")),
    )


def _load(value: str) -> object:
    """The JSON document. NaN, Infinity and numbers too large for a float are not JSON (RFC
    8259 §6), and no database column stores them."""
    try:
        return json.loads(value, parse_constant=_not_a_number, parse_float=_finite_float)
    except RecursionError:
        raise SmtpApiError(f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise SmtpApiError(f"not valid JSON ({exc})") from exc


def _not_a_number(constant: str) -> float:
    """Refuse NaN, Infinity and -Infinity, which Python's json reads by default."""
    raise ValueError(f"{constant} is not a JSON number")


def _finite_float(text: str) -> float:
    """A float, unless the number overflows to infinity (1e400)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is too large a number")
    return number


def _check_storable(value: object, path: str, *, depth: int) -> None:
    """Refuse what no column can store or serialise, wherever it is in the document: lone
    UTF-16 surrogates (JSON's "\\ud800" is not text), NUL (PostgreSQL stores it in neither
    text nor JSON) and nesting deeper than any key needs."""
    if depth > MAX_DEPTH:
        raise SmtpApiError(f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else key
            _check_text(key, inner)
            _check_storable(item, inner, depth=depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{path}.{index}" if path else str(index), depth=depth + 1)


def _check_text(value: str, path: str) -> None:
    """Refuse a string holding a lone surrogate or a NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SmtpApiError(
            f"{_shown(path)} holds a lone UTF-16 surrogate, which is not text"
        ) from None
    if "\x00" in value:
        raise SmtpApiError(f"{_shown(path)} holds a NUL character")


def _check_keys(document: Mapping[str, Any]) -> None:
    """Refuse unknown keys, non-empty personalisation keys and enabled filters."""
    for key, value in document.items():
        if key in _UNSUPPORTED and value not in (None, [], {}):
            raise SmtpApiError(
                f"{key!r} (per-recipient personalisation) is not supported; send one message "
                "per recipient, or use POST /v1/send"
            )
        if key not in (*_HONOURED, *_IGNORED, *_UNSUPPORTED):
            raise SmtpApiError(f"unknown key {_shown(key)}; supported: {', '.join(_HONOURED)}")
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
            raise SmtpApiError(f"filter {_shown(name)} is not supported (only disabling it is)")


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
            raise SmtpApiError(
                f"{_shown(f'unique_args.{key}')} must be a string, number or boolean"
            )
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
    # Compared as a number first: a datetime cannot hold a time far enough ahead.
    if value > (now + max_ahead).timestamp():
        raise SmtpApiError(f"'send_at' may be at most {format_duration(max_ahead)} ahead")
    when = datetime.fromtimestamp(value, UTC)
    return when if when > now else None


def _asm_group_id(value: object) -> int | None:
    """`asm_group_id`: the unsubscribe group, a positive 32-bit integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ASM_GROUP_ID:
        raise SmtpApiError(f"'asm_group_id' must be an integer from 1 to {MAX_ASM_GROUP_ID}")
    return value


def _shown(name: str) -> str:
    """A key or path as the reply names it: quoted and escaped unless it is printable ASCII,
    so that no key can break the reply line or hide what it holds."""
    return f"'{name}'" if name.isascii() and name.isprintable() else ascii(name)


def _no_line_breaks(value: str, name: str) -> None:
    """Refuse CR, LF and NUL, as the HTTP API does for the same fields."""
    try:
        no_line_breaks(value)
    except ValueError as exc:
        raise SmtpApiError(f"{name}: {exc}") from exc
