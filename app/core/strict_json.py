"""Strict JSON for what clients send: only data that can be stored, read back and sent again.

Python's json module accepts more than RFC 8259 allows, and some of what it accepts cannot be
stored or serialised later: `NaN` and `Infinity` (and `1e999`, which overflows to infinity),
lone UTF-16 surrogates (`"\\ud800"`: not Unicode, so no UTF-8 encoder takes them), NUL
(PostgreSQL stores it in neither text nor JSON), and nesting deep enough to exhaust the
recursion limit of whatever serialises the value next. `loads` refuses all of these, naming
the field, so that nothing accepted can fail later.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar, cast

T = TypeVar("T")

MAX_DEPTH = 64  # arrays and objects nested deeper than this are refused
# A lone surrogate or a NUL can only arrive as a \u escape (bytes are decoded strictly, and
# RFC 8259 §7 forbids raw control characters in strings): without one, no walk is needed.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")

NUL_REFUSED = "NUL characters are not allowed."
SURROGATE_REFUSED = "Text must be valid Unicode: lone UTF-16 surrogates are not allowed."
NON_FINITE_REFUSED = "NaN and Infinity are not allowed: JSON numbers are finite (RFC 8259 §6)."
TOO_DEEP = f"The JSON is nested too deeply (at most {MAX_DEPTH} levels)."
TOO_LONG_NUMBER = "A number has too many digits."


class JsonRefused(ValueError):
    """Well-formed JSON that holds something Columba does not accept."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class _NonFinite:
    """Stands in for NaN and infinities while parsing, so the walk can say where they were."""


_NON_FINITE = _NonFinite()


def loads(raw: bytes | str) -> Any:
    """Parse `raw` as strict JSON.

    Raises json.JSONDecodeError (or UnicodeDecodeError) for what is not JSON at all, and
    JsonRefused for JSON that holds what must not be stored."""
    non_finite: list[str] = []

    def constant(name: str) -> _NonFinite:
        non_finite.append(name)
        return _NON_FINITE

    def number(text: str) -> float | _NonFinite:
        value = float(text)
        if math.isfinite(value):
            return value
        non_finite.append(text)  # 1e999 overflows to infinity
        return _NON_FINITE

    if isinstance(raw, bytes):
        # Strictly: json.loads would decode bytes with "surrogatepass", letting UTF-8-encoded
        # surrogates (b"\xed\xa0\x80") through as text.
        raw = raw.decode(json.detect_encoding(raw))
    try:
        document = json.loads(raw, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError:
        raise
    except RecursionError as exc:
        raise JsonRefused(TOO_DEEP) from exc
    except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits() digits
        raise JsonRefused(TOO_LONG_NUMBER) from exc
    if non_finite or _may_hold_unstorable_text(raw) or _may_nest_too_deeply(raw):
        problem = first_problem(document)
        if problem is not None:
            raise JsonRefused(*problem)
    return document


def _may_hold_unstorable_text(text: str) -> bool:
    """False when no string in the JSON text can hold a NUL or a lone surrogate."""
    return bool(_SUSPECT_ESCAPE.search(text)) or (not text.isascii() and _has_surrogate(text))


def _has_surrogate(text: str) -> bool:
    """True for text holding a surrogate code point (only a str given to `loads` can)."""
    return _SURROGATE.search(text) is not None


def _may_nest_too_deeply(text: str) -> bool:
    """False when the brackets of the body cannot nest past MAX_DEPTH (nearly always).

    Strips everything but brackets, then removes innermost pairs MAX_DEPTH times: anything
    left means deep nesting, or brackets inside strings that do not pair up, and only then
    is the parsed document walked (much slower than this, in pure Python)."""
    brackets = _NOT_BRACKETS.sub("", text)
    for _ in range(MAX_DEPTH):
        if not brackets:
            return False
        brackets = _INNERMOST.sub("", brackets)
    return bool(brackets)


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored as it is (NUL, lone surrogates), or None."""
    if "\x00" in text:
        return NUL_REFUSED
    if not text.isascii() and _SURROGATE.search(text):
        return SURROGATE_REFUSED
    return None


def first_problem(document: Any) -> tuple[str, str | None] | None:
    """The first thing in a parsed document that must not be stored, and its dotted path."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            reason = unstorable(value)
            if reason is not None:
                return reason, _dotted(path)
        elif value is _NON_FINITE:
            return NON_FINITE_REFUSED, _dotted(path)
        elif isinstance(value, dict | list):
            if len(path) >= MAX_DEPTH:
                return TOO_DEEP, _dotted(path)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            children = [(item, (*path, str(key))) for key, item in items]
            for _, child_path in children:
                reason = unstorable(child_path[-1])
                if reason is not None:  # an object's key
                    return reason, _dotted(child_path)
            stack.extend(reversed(children))  # depth first, in document order
    return None


def _dotted(path: tuple[str, ...]) -> str | None:
    """SendGrid's field path: `personalizations.0.to.1.email` (a key that is itself the
    problem is shown with U+FFFD for its surrogates, so the error can be sent)."""
    return scrubbed(".".join(path)) or None


def scrubbed(value: T) -> T:
    """`value` with every lone surrogate replaced by U+FFFD, for readers of data stored before
    the edge refused them: what is read must always serialise. Returns `value` itself when
    there is nothing to replace (the usual case, checked without copying)."""
    return value if _clean(value) else cast(T, _replaced(value))


def _clean(value: Any) -> bool:
    """True when no string in `value` holds a surrogate (iterative: it runs for every event a
    feed page shows)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


def _replaced(value: Any) -> Any:
    """A copy of `value` with surrogates replaced."""
    if isinstance(value, str):
        # UTF-16 pairs up surrogates that belong together and replaces the lone ones.
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, dict):
        return {_replaced(key): _replaced(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_replaced(item) for item in value)
    return value
