"""Jinja2 for tenants' templates: the immutable sandbox (no `__class__`, no `|attr` escapes, no
mutation) with every loop step, call and attribute access on the render's clock, and string
amplifiers (`center`, `format`, `%`, `*` past the output limit) refused (CHECKLIST 46)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.templates.budget import RenderError, check_amounts, check_size, max_output, tick

__all__ = ["compile_jinja", "render_jinja"]


# Methods that turn a short string into a huge one from a small argument.
_AMPLIFYING_METHODS = frozenset(
    {"format", "format_map", "center", "ljust", "rjust", "zfill", "expandtabs"}
)
_REFUSED_FILTERS = frozenset({"center", "format", "indent", "wordwrap", "filesizeformat"})
_REFUSED_GLOBALS = frozenset({"lipsum"})
_MAX_EXPONENT = 64


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the deadline and size checks of this module."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        """Fail at once on `__class__` and friends rather than print nothing."""
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Arithmetic with bounded results."""
        tick()
        if operator == "%" and isinstance(left, str):
            raise SecurityError("printf-style string formatting is not allowed in templates")
        if operator == "**" and isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
            raise SecurityError("the exponent is too large for a template")
        if operator == "*":
            _check_repeat(left, right)
        result = super().call_binop(context, operator, left, right)
        check_size(result)
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Attribute access, on the clock; string methods that amplify are refused."""
        tick()
        if isinstance(obj, str) and attribute in _AMPLIFYING_METHODS:
            raise SecurityError(f"the string method {attribute!r} is not allowed in templates")
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Item access, on the clock."""
        tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Calls (methods, macros, globals), with bounded arguments and results."""
        tick()
        check_amounts([*args, *kwargs.values()])
        result = ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        check_size(result)
        return result


def _check_repeat(left: Any, right: Any) -> None:
    """`"ab" * n` and `[x] * n`: refuse results over the output limit before building them."""
    for sequence, count in ((left, right), (right, left)):
        sized = isinstance(sequence, str | list | tuple) and isinstance(count, int)
        if sized and len(sequence) * count > max_output():
            raise RenderError("the template produced too much output")


def _bounded_iteration(iterable: Any) -> Iterator[Any]:
    """Every loop step is on the clock: nested loops over data cannot spin forever."""
    for item in iterable:
        tick()
        yield item


def _guard_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter with bounded arguments and result; Jinja's pass_* markers are kept by wraps."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        tick()
        check_amounts([*args[1:], *kwargs.values()])
        result = function(*args, **kwargs)
        check_size(result)
        return result

    return guarded


def _jinja_environment(*, html: bool) -> _BoundedSandbox:
    """A sandbox for html (autoescaped) or for text and subjects (not escaped)."""
    environment = _BoundedSandbox(
        autoescape=html, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True
    )
    environment.filters = {
        name: _guard_filter(function)
        for name, function in environment.filters.items()
        if name not in _REFUSED_FILTERS
    }
    environment.filters["_bounded"] = _bounded_iteration
    for name in _REFUSED_GLOBALS:
        environment.globals.pop(name, None)
    return environment


_JINJA = {True: _jinja_environment(html=True), False: _jinja_environment(html=False)}


def _bound_loops(tree: nodes.Template) -> nodes.Template:
    """Wrap every `{% for %}` iterable in the `_bounded` filter (after parsing, so no
    template can opt out)."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "_bounded", [], [], None, None, lineno=loop.lineno)
    return tree


@functools.lru_cache(maxsize=256)
def compile_jinja(source: str, html: bool) -> jinja2.Template:
    """Parse, bound and compile once per distinct source."""
    environment = _JINJA[html]
    try:
        tree = _bound_loops(environment.parse(source))
        return environment.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"line {exc.lineno}: {exc.message}") from exc


def render_jinja(source: str, data: dict[str, Any], html: bool) -> str:
    """Stream the output, counting it, so an oversized render stops early."""
    template = compile_jinja(source, html)
    parts: list[str] = []
    size, limit = 0, max_output()
    for chunk in template.generate(data):
        tick()
        size += len(chunk)
        if size > limit:
            raise RenderError("the template produced too much output")
        parts.append(chunk)
    return "".join(parts)
