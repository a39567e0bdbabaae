"""The Handlebars helpers of SendGrid's dynamic templates, as its "Using Handlebars" reference
documents them: the Handlebars.js built-ins (if, unless, each, with, lookup) and SendGrid's
own (formatDate, insert, equals, notEquals, greaterThan, lessThan, and, or, length).

A template that calls any other helper is refused when it is saved and its recipients are
dropped at send time (`unknown_helpers`): Handlebars.js fails on a missing helper too, rather
than printing nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from pydantic_handlebars import HelperOptions
from pydantic_handlebars._ast_nodes import (
    BlockStatement,
    Expression,
    MustacheStatement,
    PathExpression,
    Program,
    SubExpression,
)
from pydantic_handlebars._helpers import get_standard_helpers
from pydantic_handlebars._utils import is_falsy

from app.templates.budget import RenderError, check_room, tick

__all__ = ["HELPERS", "format_date", "unknown_helpers"]

# --- comparisons ------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """JavaScript's ToNumber for what JSON holds: numbers, numeric strings, booleans."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip() or "0")
        except ValueError:
            return math.nan
    return None


def loose_equals(left: Any, right: Any) -> bool:
    """JavaScript's `==`, as SendGrid documents for equals: `{{#equals 3 "3"}}` is true."""
    if left is None or right is None:
        return left is None and right is None
    if type(left) is type(right) or not (_is_scalar(left) and _is_scalar(right)):
        return bool(left == right)
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    return _number(left) == _number(right)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _greater(left: Any, right: Any) -> bool:
    """JavaScript's `>`: two strings compare as text, anything else as numbers."""
    if isinstance(left, str) and isinstance(right, str):
        return left > right
    a, b = _number(left), _number(right)
    return a is not None and b is not None and a > b


def _compare(name: str, test: Callable[[Any, Any], bool]) -> Callable[..., Any]:
    """A SendGrid comparison block helper: `{{#equals a b}}yes{{else}}no{{/equals}}`."""

    def helper(context: Any, *args: Any, options: HelperOptions) -> Any:
        if len(args) != 2:
            raise RenderError(f"{name} takes two values")
        matched = test(args[0], args[1])
        return options.fn(context) if matched else options.inverse(context)

    return helper


def _combine(name: str, combine: Callable[[Iterable[bool]], bool]) -> Callable[..., Any]:
    """SendGrid's `{{#and a b}}` and `{{#or a b}}` block helpers."""

    def helper(context: Any, *args: Any, options: HelperOptions) -> Any:
        if not args:
            raise RenderError(f"{name} takes at least one value")
        truth = combine(not is_falsy(value) for value in args)
        return options.fn(context) if truth else options.inverse(context)

    return helper


def _length(*args: Any, options: HelperOptions) -> int:
    """SendGrid's `{{length items}}`: characters of a string, items of an array, else 0."""
    value = args[0] if args else None
    return len(value) if isinstance(value, list | str) else 0


def _insert(*args: Any, options: HelperOptions) -> Any:
    """SendGrid's `{{insert name "default=Customer"}}` (or `{{insert name "Customer"}}`): the
    value, or the default when it is missing or empty."""
    value = args[0] if args else None
    if not is_falsy(value):
        return value
    for extra in args[1:]:
        if isinstance(extra, str):
            return extra.removeprefix("default=")
    return options.hash.get("default", "")


def _log(*args: Any, options: HelperOptions) -> str:
    """Handlebars.js' `log` prints nothing into the template; nor does it write tenant data
    into our logs."""
    return ""


# --- formatDate -----------------------------------------------------------------------------------

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# SendGrid's documented tokens (moment.js'), longest first so `MMMM` is not read as `MM MM`;
# `[text]` is printed as it is, as in moment.js.
_TOKENS = re.compile(r"\[[^\]]*\]|YYYY|YY|MMMM|MMM|MM|M|DD|D|dddd|ddd|hh|h|HH|H|mm|m|ss|s|A|ZZ|Z")
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")
# The most a token grows when formatted: `Z` (one character) becomes `+05:30`.
_MAX_GROWTH = 6
# Epoch numbers above this are milliseconds (JavaScript's Date), below it seconds.
_EPOCH_MILLISECONDS = 100_000_000_000


def _offset_text(offset: timedelta, colon: bool) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{rest:02d}"


def _token(moment: datetime, token: str) -> str:
    """One token of a formatDate format, for `moment`."""
    if token.startswith("["):
        return token[1:-1]
    hour12 = moment.hour % 12 or 12
    offset = moment.utcoffset() or timedelta(0)
    values = {
        "YYYY": f"{moment.year:04d}",
        "YY": f"{moment.year % 100:02d}",
        "MMMM": _MONTHS[moment.month - 1],
        "MMM": _MONTHS[moment.month - 1][:3],
        "MM": f"{moment.month:02d}",
        "M": str(moment.month),
        "DD": f"{moment.day:02d}",
        "D": str(moment.day),
        "dddd": _DAYS[moment.weekday()],
        "ddd": _DAYS[moment.weekday()][:3],
        "hh": f"{hour12:02d}",
        "h": str(hour12),
        "HH": f"{moment.hour:02d}",
        "H": str(moment.hour),
        "mm": f"{moment.minute:02d}",
        "m": str(moment.minute),
        "ss": f"{moment.second:02d}",
        "s": str(moment.second),
        "A": "PM" if moment.hour >= 12 else "AM",
        "ZZ": _offset_text(offset, colon=False),
        "Z": _offset_text(offset, colon=True),
    }
    return values[token]


def _moment(value: Any) -> datetime:
    """A time given as epoch seconds (or milliseconds) or ISO 8601; UTC when it has no zone."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= _EPOCH_MILLISECONDS else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise RenderError(f"formatDate: {value} is not a time") from exc
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise RenderError(f"formatDate: {value!r} is neither ISO 8601 nor epoch") from exc
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise RenderError(f"formatDate: a {type(value).__name__} is not a time")


def _zone(offset: Any) -> timezone:
    """A timezone offset as SendGrid's formatDate takes it: `-0800` or `-08:00`."""
    match = _OFFSET.match(str(offset).strip())
    if match is None:
        raise RenderError(f"formatDate: the timezone offset {offset!r} is not like -0800")
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta >= timedelta(hours=24):
        raise RenderError(f"formatDate: the timezone offset {offset!r} is out of range")
    return timezone(-delta if sign == "-" else delta)


def format_date(value: Any, layout: str, offset: Any = None) -> str:
    """SendGrid's `{{formatDate time "MMMM DD, YYYY" "-0800"}}`: `time` shown in UTC, or at
    the offset given."""
    tick()
    check_room(len(layout) * _MAX_GROWTH)  # the output limit holds before it is built
    moment = _moment(value).astimezone(_zone(offset) if offset else UTC)
    return _TOKENS.sub(lambda match: _token(moment, match.group(0)), layout)


def _format_date(*args: Any, options: HelperOptions) -> str:
    """The helper: a missing time prints nothing, as a missing value does in Handlebars."""
    if not args or len(args) > 3:
        raise RenderError("formatDate takes a time, a format and optionally a timezone offset")
    if len(args) == 1:
        raise RenderError('formatDate needs a format, such as "MM/DD/YYYY"')
    value, layout, *offset = args
    if value is None or value == "":
        return ""
    if not isinstance(layout, str):
        raise RenderError("formatDate: the format must be a string")
    return format_date(value, layout, offset[0] if offset else None)


# --- the set ----------------------------------------------------------------------------------


def _helpers() -> dict[str, Any]:
    """The Handlebars.js built-ins and SendGrid's documented helpers."""
    helpers: dict[str, Any] = dict(get_standard_helpers())
    helpers.update(
        {
            "log": _log,
            "formatDate": _format_date,
            "insert": _insert,
            "equals": _compare("equals", loose_equals),
            "notEquals": _compare("notEquals", lambda a, b: not loose_equals(a, b)),
            "greaterThan": _compare("greaterThan", _greater),
            "lessThan": _compare("lessThan", lambda a, b: _greater(b, a)),
            "and": _combine("and", all),
            "or": _combine("or", any),
            "length": _length,
        }
    )
    return helpers


HELPERS = _helpers()


def _helper_name(path: Expression) -> str | None:
    """The name a call uses (only a plain `name` can be a helper; `a.b`, `this` or `@x`
    with arguments call something that is not)."""
    return path.original if isinstance(path, PathExpression) else None


def _calls(program: Program | None) -> Iterator[tuple[str | None, bool]]:
    """Every helper call of a parsed template: its name, and whether it must be a helper
    (it has arguments, or is a subexpression) rather than a value of the data."""
    for statement in program.body if program else ():
        if isinstance(statement, MustacheStatement | BlockStatement):
            called = bool(statement.params or statement.hash_pairs)
            yield _helper_name(statement.path), called
            yield from _expression_calls(statement.path)
            for expression in (*statement.params, *statement.hash_pairs.values()):
                yield from _expression_calls(expression)
        if isinstance(statement, BlockStatement):
            yield from _calls(statement.body)
            yield from _calls(statement.inverse)


def _expression_calls(expression: Expression) -> Iterator[tuple[str | None, bool]]:
    if isinstance(expression, SubExpression):
        yield expression.path.original, True
        for inner in (*expression.params, *expression.hash_pairs.values()):
            yield from _expression_calls(inner)


def unknown_helpers(program: Program) -> list[str]:
    """The helpers a template calls that SendGrid's dynamic templates do not have."""
    unknown = {name for name, called in _calls(program) if called and name not in HELPERS}
    return sorted(name or "?" for name in unknown)
