"""Template languages, sandboxed and bounded: Jinja2 and the Handlebars of SendGrid's templates.

A template is written by a tenant, so rendering treats it as hostile (CHECKLIST 46):
- Jinja2 runs in its immutable sandbox (no `__class__`, no `|attr` escapes, no mutation), with
  string amplifiers (`center`, `format`, `%`, `*` past the output limit) refused.
- Handlebars has no code path at all: pydantic-handlebars walks the parsed tree over JSON data.
- Both check one deadline as they go (every loop step, call, attribute and output chunk) and
  stop at an output limit, so a template can neither hang a worker nor exhaust its memory.
Rendering is a pure function of (source, data): no clock, no randomness, so retries send the
same bytes (CHECKLIST 26).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic_handlebars import HandlebarsError, HelperOptions
from pydantic_handlebars._compiler import Compiler as HandlebarsCompiler
from pydantic_handlebars._helpers import get_standard_helpers
from pydantic_handlebars._parser import parse as parse_handlebars
from pydantic_handlebars._utils import is_falsy

from app.templates.models import TemplateEngine

__all__ = ["RenderError", "RenderLimits", "check_syntax", "render"]


class RenderError(Exception):
    """A template that cannot be compiled or rendered with the data given."""


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """How long one render may take and how much text it may produce."""

    max_seconds: float = 2.0
    max_output: int = 1024 * 1024


@dataclass(slots=True)
class _Budget:
    """The running render's deadline and output limit."""

    deadline: float
    max_output: int


_budget: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _tick() -> None:
    """Stop the render once its time is up."""
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise RenderError("the template took too long to render")


def _max_output() -> int:
    budget = _budget.get()
    return budget.max_output if budget is not None else RenderLimits().max_output


def _check_size(value: object) -> None:
    """Refuse intermediate strings, lists and numbers bigger than the whole output may be."""
    if isinstance(value, str | list | tuple | dict) and len(value) > _max_output():
        raise RenderError("the template produced too much output")
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise RenderError("the template computed a number too large to print")


def _check_amounts(args: Iterable[object]) -> None:
    """Refuse huge numbers as call arguments: widths, counts and repeats amplify strings."""
    limit = _max_output()
    for value in args:
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > limit:
            raise RenderError(f"the number {value} is too large for a template")


# --- Jinja2 ----------------------------------------------------------------------------------

# Methods that turn a short string into a huge one from a small argument.
_AMPLIFYING_METHODS = frozenset(
    {"format", "format_map", "center", "ljust", "rjust", "zfill", "expandtabs"}
)
_REFUSED_FILTERS = frozenset({"center", "format", "indent", "wordwrap", "filesizeformat"})
_REFUSED_GLOBALS = frozenset({"lipsum"})
_MAX_EXPONENT = 64
_MAX_INT_BITS = 4096


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the deadline and size checks of this module."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        """Fail at once on `__class__` and friends rather than print nothing."""
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Arithmetic with bounded results."""
        _tick()
        if operator == "%" and isinstance(left, str):
            raise SecurityError("printf-style string formatting is not allowed in templates")
        if operator == "**" and isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
            raise SecurityError("the exponent is too large for a template")
        if operator == "*":
            _check_repeat(left, right)
        result = super().call_binop(context, operator, left, right)
        _check_size(result)
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Attribute access, on the clock; string methods that amplify are refused."""
        _tick()
        if isinstance(obj, str) and attribute in _AMPLIFYING_METHODS:
            raise SecurityError(f"the string method {attribute!r} is not allowed in templates")
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Item access, on the clock."""
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Calls (methods, macros, globals), with bounded arguments and results."""
        _tick()
        _check_amounts([*args, *kwargs.values()])
        result = ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        _check_size(result)
        return result


def _check_repeat(left: Any, right: Any) -> None:
    """`"ab" * n` and `[x] * n`: refuse results over the output limit before building them."""
    for sequence, count in ((left, right), (right, left)):
        sized = isinstance(sequence, str | list | tuple) and isinstance(count, int)
        if sized and len(sequence) * count > _max_output():
            raise RenderError("the template produced too much output")


def _bounded_iteration(iterable: Any) -> Iterator[Any]:
    """Every loop step is on the clock: nested loops over data cannot spin forever."""
    for item in iterable:
        _tick()
        yield item


def _guard_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter with bounded arguments and result; Jinja's pass_* markers are kept by wraps."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_amounts([*args[1:], *kwargs.values()])
        result = function(*args, **kwargs)
        _check_size(result)
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
def _jinja_template(source: str, html: bool) -> jinja2.Template:
    """Parse, bound and compile once per distinct source."""
    environment = _JINJA[html]
    try:
        tree = _bound_loops(environment.parse(source))
        return environment.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"line {exc.lineno}: {exc.message}") from exc


def _render_jinja(source: str, data: dict[str, Any], html: bool) -> str:
    """Stream the output, counting it, so an oversized render stops early."""
    template = _jinja_template(source, html)
    parts: list[str] = []
    size, limit = 0, _max_output()
    for chunk in template.generate(data):
        _tick()
        size += len(chunk)
        if size > limit:
            raise RenderError("the template produced too much output")
        parts.append(chunk)
    return "".join(parts)


# --- Handlebars ------------------------------------------------------------------------------


class _BoundedHandlebars(HandlebarsCompiler):
    """pydantic-handlebars' tree-walking renderer, with every block body on the clock."""

    def _render_program(self, program: Any, scope: Any) -> str:
        _tick()
        return str(super()._render_program(program, scope))


def _compare(name: str, test: Callable[[Any, Any], bool]) -> Callable[..., Any]:
    """A SendGrid comparison block helper: `{{#equals a b}}yes{{else}}no{{/equals}}`."""

    def helper(context: Any, *args: Any, options: HelperOptions) -> Any:
        if len(args) != 2:
            raise RenderError(f"{name} takes two values")
        try:
            matched = test(args[0], args[1])
        except TypeError:
            matched = False
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
    """SendGrid's `{{length items}}`."""
    value = args[0] if args else None
    return len(value) if isinstance(value, list | dict | str) else 0


def _insert(*args: Any, options: HelperOptions) -> Any:
    """SendGrid's `{{insert name "default=Customer"}}`: the value, or the default when empty."""
    value = args[0] if args else None
    if not is_falsy(value):
        return value
    for extra in args[1:]:
        if isinstance(extra, str) and extra.startswith("default="):
            return extra.removeprefix("default=")
    return options.hash.get("default", "")


def _handlebars_helpers() -> dict[str, Any]:
    """The Handlebars.js built-ins (without `log`) and SendGrid's documented helpers."""
    helpers: dict[str, Any] = dict(get_standard_helpers())
    helpers.pop("log", None)  # it would write tenant data to our logs
    helpers.update(
        {
            "equals": _compare("equals", lambda a, b: bool(a == b)),
            "notEquals": _compare("notEquals", lambda a, b: bool(a != b)),
            "greaterThan": _compare("greaterThan", lambda a, b: bool(a > b)),
            "lessThan": _compare("lessThan", lambda a, b: bool(a < b)),
            "and": _combine("and", all),
            "or": _combine("or", any),
            "length": _length,
            "insert": _insert,
        }
    )
    return helpers


_HANDLEBARS_HELPERS = _handlebars_helpers()


@functools.lru_cache(maxsize=256)
def _handlebars_program(source: str) -> Any:
    """Parse once per distinct source."""
    try:
        return parse_handlebars(source)
    except HandlebarsError as exc:
        raise RenderError(str(exc)) from exc


def _render_handlebars(source: str, data: dict[str, Any]) -> str:
    """Render like Handlebars.js: `{{x}}` HTML-escaped everywhere, `{{{x}}}` raw (as
    SendGrid does for subjects and text too)."""
    program = _handlebars_program(source)
    compiler = _BoundedHandlebars(
        helpers=_HANDLEBARS_HELPERS, auto_escape=True, max_output_size=_max_output()
    )
    return str(compiler.render(program, data))


# --- the interface ---------------------------------------------------------------------------


def check_syntax(engine: str, source: str, *, html: bool) -> None:
    """Raise RenderError (with the line) when `source` does not compile."""
    if engine == TemplateEngine.HANDLEBARS:
        _handlebars_program(source)
    else:
        _jinja_template(source, html)


def render(
    engine: str, source: str, data: dict[str, Any], *, html: bool, limits: RenderLimits
) -> str:
    """Render `source` with `data`; RenderError on any failure, never anything else."""
    token = _budget.set(_Budget(time.monotonic() + limits.max_seconds, limits.max_output))
    try:
        if engine == TemplateEngine.HANDLEBARS:
            return _render_handlebars(source, data)
        return _render_jinja(source, data, html)
    except RenderError:
        raise
    except (jinja2.TemplateError, HandlebarsError, ArithmeticError, LookupError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc
    except (TypeError, ValueError, RecursionError, MemoryError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        _budget.reset(token)
