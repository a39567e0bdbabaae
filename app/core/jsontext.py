"""JSON text for storage: orjson where it can (several times faster than the json module on
the accept path's thousand rows), the json module for the rare value orjson refuses."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """Compact JSON text of `value`."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers past 64 bits, keys that are not strings
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def size(value: Any) -> int:
    """The byte length of `value` as compact UTF-8 JSON."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def loads(text: str | bytes) -> Any:
    """The value of stored JSON text (only ever text this module or PostgreSQL wrote)."""
    return orjson.loads(text)
