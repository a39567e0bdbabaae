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
    except TypeError:  # integers past 64 bits, keys that are not strings, lone surrogates
        # ASCII escapes: any str can be written so, even one no UTF-8 encoder takes.
        return json.dumps(value, separators=(",", ":"))


def size(value: Any) -> int:
    """The byte length of `value` as compact UTF-8 JSON."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return len(text.encode("utf-8", "surrogatepass"))


def loads(text: str | bytes) -> Any:
    """The value of stored JSON text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what orjson refuses to read, e.g. an escaped lone
        return json.loads(text)  # surrogate stored before the edge refused them
