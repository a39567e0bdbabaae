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
from typing import Any

import jinja2
from pydantic_handlebars import HandlebarsError, HandlebarsRuntimeError
from pydantic_handlebars._compiler import Compiler as HandlebarsCompiler
from pydantic_handlebars._parser import parse as parse_handlebars

from app.templates.budget import (
    LimitExceeded,
    RenderError,
    RenderLimits,
    max_output,
    spending,
    tick,
)
from app.templates.helpers import HELPERS, unknown_helpers
from app.templates.models import TemplateEngine
from app.templates.sandbox import compile_jinja, render_jinja

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


@functools.lru_cache(maxsize=256)
def _handlebars_program(source: str) -> Any:
    """Parse once per distinct source; a call of a helper SendGrid does not have is an error
    here, so that it is refused when saved and never rendered as nothing."""
    try:
        program = parse_handlebars(source)
    except HandlebarsError as exc:
        raise RenderError(str(exc)) from exc
    unknown = unknown_helpers(program)
    if unknown:
        names = ", ".join(unknown)
        raise RenderError(
            f"unknown helper {names}: SendGrid's dynamic templates have no such helper"
        )
    return program


def _render_handlebars(source: str, data: dict[str, Any]) -> str:
    """Render like Handlebars.js: `{{x}}` HTML-escaped everywhere, `{{{x}}}` raw (as
    SendGrid does for subjects and text too)."""
    program = _handlebars_program(source)
    compiler = _BoundedHandlebars(helpers=HELPERS, auto_escape=True, max_output_size=max_output())
    return str(compiler.render(program, data))


# --- the interface ---------------------------------------------------------------------------


def check_syntax(engine: str, source: str, *, html: bool) -> None:
    """Raise RenderError (with the line) when `source` does not compile."""
    if engine == TemplateEngine.HANDLEBARS:
        _handlebars_program(source)
    elif engine == TemplateEngine.JINJA:
        compile_jinja(source, html)
    # a legacy template has no language: its tags are plain text


def render(
    engine: str, source: str, data: dict[str, Any], *, html: bool, limits: RenderLimits
) -> str:
    """Render `source` with `data`; RenderError on any failure, never anything else. A
    legacy template is its own rendering (its tags are replaced when a send is accepted)."""
    if engine == TemplateEngine.LEGACY:
        return source
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
