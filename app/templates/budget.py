"""What one render may spend: a deadline and a size limit, checked as the template runs.

Every template engine here calls `tick()` as it goes (loop steps, calls, attribute access,
output chunks) and holds every value it builds, not only its output, to the output limit:
checked before building where the size can be known (`check_room`), after it otherwise
(`check_built`). Since a render may keep many such values alive at once, what it builds is
also counted in all (`BUILT_PER_OUTPUT`). So a template can neither hang a worker nor
exhaust its memory.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard, cast

if TYPE_CHECKING:
    from app.core.config import Settings

__all__ = [
    "LimitExceeded",
    "RenderError",
    "RenderLimits",
    "check_amounts",
    "check_built",
    "check_room",
    "check_size",
    "count_built",
    "max_output",
    "render_limits",
    "size_of",
    "spending",
    "tick",
]

_MAX_INT_BITS = 4096
# The memory all the values of one render may take together (counted as they are built,
# freed or not), as a multiple of the output limit.
BUILT_PER_OUTPUT = 16


class RenderError(Exception):
    """A template that cannot be compiled or rendered with the data given."""


class LimitExceeded(RenderError):
    """A render stopped by its limits (time, size) rather than by an error in the template."""


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """How long one render may take and how much text it may produce."""

    max_seconds: float = 2.0
    max_output: int = 1024 * 1024


def render_limits(settings: Settings) -> RenderLimits:
    """How long one recipient's template may render and how much it may produce."""
    return RenderLimits(
        max_seconds=settings.template_render_timeout.total_seconds(),
        max_output=settings.template_max_output,
    )


@dataclass(slots=True)
class _Budget:
    """The running render's deadline and output limit, and the memory it has built so far."""

    deadline: float
    max_output: int
    built: int = 0


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
        raise LimitExceeded("the template took too long to render")


def max_output() -> int:
    """The running render's output limit (the default outside a render: compile time)."""
    budget = _budget.get()
    return budget.max_output if budget is not None else RenderLimits().max_output


def _is_container(value: object) -> TypeGuard[Collection[object]]:
    """Lists, tuples, sets and dicts (and their views); not strings, ranges or namespaces,
    which print short (app.templates.sandbox)."""
    return isinstance(value, Collection) and not isinstance(value, str | bytes | range)


def _parts(container: Collection[object]) -> Iterator[object]:
    """What a container holds: its items, or a dict's keys and values."""
    if isinstance(container, Mapping):
        return itertools.chain(container.keys(), container.values())
    return iter(container)


@dataclass(slots=True)
class _Measuring:
    """A container being measured: what is left of its parts and its size so far."""

    container: Collection[object]
    rest: Iterator[object]
    size: int


_SCALARS = frozenset({int, float, bool, type(None)})


def _leaf_size(value: object) -> int:
    return len(value) if isinstance(value, str | bytes) else 1


class _Walk:
    """One measurement (see size_of): the containers on the path down, and the size of each
    container measured so far (a reference cycle counts as past the limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: dict[int, int] = {}
        self.alive: list[object] = []  # every container measured, so no id is reused meanwhile
        self.path: list[_Measuring] = []

    def enter(self, container: Collection[object]) -> None:
        """Start measuring a container; until done, what refers back to it is too large."""
        self.sizes[id(container)] = self.limit + 1
        self.alive.append(container)
        self.path.append(_Measuring(container, _parts(container), len(container)))

    def known(self, part: object) -> int | None:
        """A part's size, or None for a container not measured yet."""
        kind = type(part)
        if kind is str:  # the common case first: this is the cost of a check
            return len(part)  # type: ignore[arg-type]  # a str, as type() said
        if kind in _SCALARS:
            return 1
        size = self.sizes.get(id(part))
        if size is None and not _is_container(part):
            return _leaf_size(part)
        return size

    def step(self) -> int | None:
        """Measure the innermost container further: None while there is more to do, else
        the size (or a size past the limit, as soon as one is reached)."""
        current = self.path[-1]
        for part in current.rest:
            size = self.known(part)
            if size is None:
                self.enter(cast(Collection[object], part))
                return None
            current.size += size
            if current.size > self.limit:
                return current.size  # what holds it is at least as big
        self.path.pop()
        self.sizes[id(current.container)] = current.size
        if not self.path:
            return current.size
        parent = self.path[-1]
        parent.size += current.size
        return parent.size if parent.size > self.limit else None


def size_of(value: object, limit: int) -> int:
    """How big `value` is when spelled out: the characters of its strings plus one for every
    item, through nested lists, tuples and dicts. A part held twice counts twice, as it would
    print twice, so that values sharing their parts (cheap to build) cannot grow
    exponentially either. Each distinct container is walked once, and the count stops once
    past `limit`."""
    if not _is_container(value):
        return _leaf_size(value)
    walk = _Walk(limit)
    walk.enter(value)
    while (size := walk.step()) is None:
        pass
    return size


def check_room(size: int) -> None:
    """Refuse to build a value of `size` when it is over the output limit."""
    limit = max_output()
    if size > limit:
        raise LimitExceeded(f"the template built a value larger than the output limit ({limit})")


def check_size(value: object) -> None:
    """Refuse a value bigger than the whole output may be, and numbers too large to print."""
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise LimitExceeded("the template computed a number too large to print")
    elif isinstance(value, str):
        check_room(len(value))
    elif type(value) not in _SCALARS:
        check_room(size_of(value, max_output()))


def check_built(value: object) -> None:
    """`check_size` and `count_built` for a value the template has just built."""
    check_size(value)
    count_built(value)


def count_built(value: object) -> None:
    """Count a value the template has just built towards the memory all of the render's
    values may take: `sys.getsizeof`, the object itself, not what it holds (counted when
    that was built)."""
    budget = _budget.get()
    if budget is None:  # compile time: constant folding of literals
        return
    budget.built += sys.getsizeof(value)
    if budget.built > budget.max_output * BUILT_PER_OUTPUT:
        limit = budget.max_output * BUILT_PER_OUTPUT
        raise LimitExceeded(f"the template built values larger than {limit} bytes in all")


def check_amounts(args: Iterable[object]) -> None:
    """Refuse huge numbers as call arguments: widths, counts and repeats amplify strings."""
    limit = max_output()
    for value in args:
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > limit:
            raise LimitExceeded(f"the number {value} is too large for a template")
