"""Template languages, sandboxed and bounded: Jinja2 and the Handlebars of SendGrid's templates.

A template is written by a tenant, so rendering treats it as hostile (CHECKLIST 46):
- Jinja2 runs in its immutable sandbox (app.templates.sandbox).
- Handlebars has no code path at all: pydantic-handlebars walks the parsed tree over JSON data.
- Both run within a budget (app.templates.budget): one deadline, checked as they go, and an
  output limit, so a template can neither hang a worker nor exhaust its memory.
Rendering is a pure function of (source, data): no clock, no randomness, so retries send the
same bytes (CHECKLIST 26).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jinja2
from pydantic_handlebars import HandlebarsError, HandlebarsRuntimeError, HelperOptions
from pydantic_handlebars._compiler import Compiler as HandlebarsCompiler
from pydantic_handlebars._helpers import get_standard_helpers
from pydantic_handlebars._parser import parse as parse_handlebars
from pydantic_handlebars._utils import is_falsy

from app.templates.budget import (
    LimitExceeded,
    RenderError,
    RenderLimits,
    max_output,
    spending,
    tick,
)
from app.templates.models import TemplateEngine
from app.templates.sandbox import compile_jinja, render_jinja
from app.tracking.layout import HANDLEBARS_LINKS

__all__ = ["LimitExceeded", "RenderError", "RenderLimits", "check_syntax", "render"]


class _BoundedHandlebars(HandlebarsCompiler):
    """pydantic-handlebars' tree-walking renderer, with every block body on the clock and its
    limits (nesting, output) told apart from errors in the template."""

    def _render_program(self, program: Any, scope: Any) -> str:
        tick()
        if self._depth >= self._max_depth:
            raise LimitExceeded(f"the template nests blocks deeper than {self._max_depth}")
        try:
            return str(super()._render_program(program, scope))
        except HandlebarsRuntimeError:
            if self._output_size > self._max_output_size:
                limit = self._max_output_size
                raise LimitExceeded(
                    f"the template's output is larger than the output limit ({limit})"
                ) from None
            raise


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


def _constant(value: str) -> Callable[..., str]:
    """A helper that renders `value` whatever it is given."""

    def helper(*args: Any, options: HelperOptions) -> str:
        return value

    return helper


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
            # SendGrid's `{{{unsubscribe}}}` and `{{{unsubscribe_preferences}}}`: the link
            # tags, which each copy then fills with its recipient's own links. Helpers, not
            # data, so that `{{#each this}}` over the data never meets them.
            **{name: _constant(tag) for name, tag in HANDLEBARS_LINKS.items()},
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
        helpers=_HANDLEBARS_HELPERS, auto_escape=True, max_output_size=max_output()
    )
    return str(compiler.render(program, data))


# --- the interface ---------------------------------------------------------------------------


def check_syntax(engine: str, source: str, *, html: bool) -> None:
    """Raise RenderError (with the line) when `source` does not compile."""
    if engine == TemplateEngine.HANDLEBARS:
        _handlebars_program(source)
    else:
        compile_jinja(source, html)


def render(
    engine: str, source: str, data: dict[str, Any], *, html: bool, limits: RenderLimits
) -> str:
    """Render `source` with `data`; RenderError on any failure, never anything else."""
    try:
        with spending(limits):
            if engine == TemplateEngine.HANDLEBARS:
                return _render_handlebars(source, data)
            return render_jinja(source, data, html)
    except RenderError:
        raise
    except (jinja2.TemplateError, HandlebarsError, ArithmeticError, LookupError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc
    except (TypeError, ValueError, RecursionError, MemoryError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc
