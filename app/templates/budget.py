"""What one render may spend: a deadline and a size limit, checked as the template runs.

Every template engine here calls `tick()` as it goes (loop steps, calls, attribute access,
output chunks) and checks what it builds against the output limit, so a template can
neither hang a worker nor exhaust its memory.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "RenderError",
    "RenderLimits",
    "check_amounts",
    "check_size",
    "max_output",
    "spending",
    "tick",
]

_MAX_INT_BITS = 4096


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


@contextmanager
def spending(limits: RenderLimits) -> Iterator[None]:
    """Run a render within `limits` (the checks below read them)."""
    token = _budget.set(_Budget(time.monotonic() + limits.max_seconds, limits.max_output))
    try:
        yield
    finally:
        _budget.reset(token)


def tick() -> None:
    """Stop the render once its time is up."""
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise RenderError("the template took too long to render")


def max_output() -> int:
    """The running render's output limit (the default outside a render: compile time)."""
    budget = _budget.get()
    return budget.max_output if budget is not None else RenderLimits().max_output


def check_size(value: object) -> None:
    """Refuse intermediate strings, lists and numbers bigger than the whole output may be."""
    if isinstance(value, str | list | tuple | dict) and len(value) > max_output():
        raise RenderError("the template produced too much output")
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise RenderError("the template computed a number too large to print")


def check_amounts(args: Iterable[object]) -> None:
    """Refuse huge numbers as call arguments: widths, counts and repeats amplify strings."""
    limit = max_output()
    for value in args:
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > limit:
            raise RenderError(f"the number {value} is too large for a template")
