"""Jinja2 for tenants' templates: the immutable sandbox (no `__class__`, no `|attr` escapes, no
mutation) with every loop step, call and attribute access on the render's clock, and every
value the template builds held to the output limit (CHECKLIST 46).

Bounding only the output is not enough: `{% set %}` and `~` build values that are never
printed, and doubling one 24 times in set statements builds 128 MiB. So:
- what a template can build is checked before it is built where its size can be known:
  `~`, `+` and `*` (binary operators), `replace` and `join` (filters and string methods),
  and whatever blocks join (`{% set %}…{% endset %}`, macros, filter and call blocks);
- after it is built otherwise (filter and call results, list, tuple and dict literals,
  items of generators), where the growth is at most a small factor;
- amplifiers whose size cannot be told in advance (`format`, `center`, `%`, …) are refused;
- a namespace prints as `<Namespace>`, since what it holds may change after it is shared.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape, soft_str

from app.templates.budget import (
    LimitExceeded,
    RenderError,
    check_amounts,
    check_built,
    check_room,
    check_size,
    count_built,
    max_output,
    size_of,
    tick,
)

__all__ = ["compile_jinja", "render_jinja"]


# Methods that turn a short string into a huge one from a small argument, by an amount that
# cannot be told before they run.
_AMPLIFYING_METHODS = frozenset(
    {"format", "format_map", "center", "ljust", "rjust", "zfill", "expandtabs", "translate"}
)
_REFUSED_FILTERS = frozenset({"center", "format", "indent", "wordwrap", "filesizeformat"})
_REFUSED_GLOBALS = frozenset({"lipsum"})
_MAX_EXPONENT = 64


def _joined_size(items: Iterable[Any], separator: int) -> int:
    """The size of `items` joined with a separator of `separator` characters (a bound, for
    items that are not strings yet); stops counting past the limit."""
    limit, total = max_output(), 0
    for index, item in enumerate(items):
        total += size_of(item, limit) + (separator if index else 0)
        if total > limit:
            break
    return total


def _replace(text: Any, old: Any, new: Any, count: int = -1) -> Any:
    """`str.replace` (and bytes'), refused before it builds a value over the limit."""
    found = text.count(old)
    found = found if count < 0 else min(found, count)
    check_room(len(text) + found * (len(new) - len(old)))
    return text.replace(old, new, count)


def _join(separator: Any, iterable: Iterable[Any]) -> Any:
    """`str.join` (and bytes'), refused before it builds a value over the limit."""
    items = list(iterable)
    check_room(_joined_size(items, len(separator)))
    return separator.join(items)


# String methods whose result size is known in advance: checked, then run.
_BOUNDED_METHODS: dict[str, Callable[..., Any]] = {"replace": _replace, "join": _join}


class _BoundedNamespace(Namespace):
    """`namespace()`, printed without what it holds: its attributes can change after it is
    put in a list or in another namespace, so what it holds could not be counted in their
    size when they are built, and must not be printed or compared through them either."""

    def __setitem__(self, name: str, value: Any) -> None:
        tick()
        super().__setitem__(name, value)

    def __repr__(self) -> str:
        return "<Namespace>"


def _bounded_concat(parts: Iterable[str]) -> str:
    """What a block builds (`{% set %}…{% endset %}`, a macro's or a filter block's body),
    joined only when it fits; Jinja's compiled code calls `environment.concat` for it."""
    parts = list(parts)
    check_room(sum(map(len, parts)))
    joined = "".join(parts)
    check_built(joined)
    return joined


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the deadline and size checks of this module."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    concat = staticmethod(_bounded_concat)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        """Fail at once on `__class__` and friends rather than print nothing."""
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Arithmetic with bounded results, checked before they are built where possible."""
        tick()
        if operator == "%" and isinstance(left, str | bytes):
            raise SecurityError("printf-style string formatting is not allowed in templates")
        if operator == "**" and isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
            raise LimitExceeded("the exponent is too large for a template")
        size = _binop_size(operator, left, right)
        if size is not None:
            check_room(size)
        result = super().call_binop(context, operator, left, right)
        if size is None or isinstance(result, str):  # markup escapes what it is added to
            check_size(result)
        count_built(result)
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Attribute access, on the clock; string methods that amplify are refused, those
        whose result size is known are checked before they run."""
        tick()
        if not isinstance(obj, str | bytes):
            return super().getattr(obj, attribute)
        if attribute in _AMPLIFYING_METHODS:
            raise SecurityError(f"the string method {attribute!r} is not allowed in templates")
        value = super().getattr(obj, attribute)
        bounded = _BOUNDED_METHODS.get(attribute)
        return functools.partial(bounded, obj) if bounded and callable(value) else value

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Item access, on the clock. `s['name']` on a string is attribute access (Jinja falls
        back to it), so it gets the same checks as `s.name`."""
        tick()
        if isinstance(obj, str | bytes) and isinstance(argument, str):
            return self.getattr(obj, argument)
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Calls (methods, macros, globals), with bounded arguments and results."""
        tick()
        check_amounts([*args, *kwargs.values()])
        result = ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
        check_built(result)
        return result


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _binop_size(operator: str, left: Any, right: Any) -> int | None:
    """The size of `left + right` or `left * right` on strings, lists and tuples, known
    before it is built; None for other operations."""
    if operator == "+" and _is_sequence(left) and _is_sequence(right):
        limit = max_output()
        return size_of(left, limit) + size_of(right, limit)
    if operator == "*":
        for sequence, count in ((left, right), (right, left)):
            if _is_sequence(sequence) and isinstance(count, int):
                return size_of(sequence, max_output()) * max(count, 0)
    return None


# --- filters ---------------------------------------------------------------------------------


def _bounded_iteration(iterable: Any) -> Iterator[Any]:
    """Every loop step is on the clock: nested loops over data cannot spin forever."""
    for item in iterable:
        tick()
        yield item


def _checked_items(iterator: Iterator[Any]) -> Iterator[Any]:
    """The items a filter generates (`map`, `batch`, `slice`, …), each held to the limit."""
    for item in iterator:
        tick()
        check_built(item)
        yield item


def _sized(value: Any) -> Any:
    """A list, tuple or dict literal, held to the limit (its items may be shared)."""
    check_built(value)
    return value


@pass_eval_context
def _joined(eval_ctx: EvalContext, values: tuple[Any, ...]) -> str:
    """`a ~ b`, joined only when it fits; as Jinja's markup_join when autoescaping (an
    operand that is markup makes the others escaped) and str_join otherwise."""
    parts = [soft_str(value) for value in values]
    markup = eval_ctx.autoescape or eval_ctx.volatile
    if markup and any(hasattr(part, "__html__") for part in parts):
        parts = [escape(part) for part in parts]
        check_room(sum(map(len, parts)))
        joined: str = Markup("").join(parts)
    else:
        check_room(sum(map(len, parts)))
        joined = "".join(parts)
    check_built(joined)
    return joined


def _bounded_replace(replace: Callable[..., Any]) -> Callable[..., Any]:
    """The `replace` filter, refused before it builds a value over the limit."""

    @pass_eval_context
    def bounded(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: Any = None) -> Any:
        text, old_text, new_text = soft_str(s), soft_str(old), soft_str(new)
        found = text.count(old_text)
        found = found if count is None or count < 0 else min(found, count)
        if found and eval_ctx.autoescape:
            new_text = escape(new_text)  # it may be escaped: count it as it would be
        check_room(len(text) + found * (len(new_text) - len(old_text)))
        return replace(eval_ctx, s, old, new, count)

    return bounded


def _bounded_join(join: Callable[..., Any]) -> Callable[..., Any]:
    """The `join` filter, refused before it builds a value over the limit."""

    @pass_eval_context
    def bounded(eval_ctx: EvalContext, value: Any, d: Any = "", attribute: Any = None) -> Any:
        items = list(value)
        if attribute is not None:
            items = list(map(make_attrgetter(eval_ctx.environment, attribute), items))
        check_room(_joined_size(items, len(soft_str(d))))
        return join(eval_ctx, items, d)

    return bounded


def _guard_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter with bounded arguments and result; Jinja's pass_* markers are kept by wraps."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        tick()
        check_amounts([*args[1:], *kwargs.values()])
        result = function(*args, **kwargs)
        if isinstance(result, Iterator):
            return _checked_items(result)
        check_built(result)
        return result

    return guarded


def _filters(defaults: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Jinja's filters, guarded, with `replace` and `join` checked before they build and
    the amplifiers left out; plus the ones the rewritten tree calls."""
    filters = {name: f for name, f in defaults.items() if name not in _REFUSED_FILTERS}
    filters["replace"] = _bounded_replace(filters["replace"])
    filters["join"] = _bounded_join(filters["join"])
    guarded = {name: _guard_filter(function) for name, function in filters.items()}
    internal: dict[str, Callable[..., Any]] = {
        "_bounded": _bounded_iteration,
        "_joined": _joined,
        "_sized": _sized,
    }
    return guarded | internal


def _jinja_environment(*, html: bool) -> _BoundedSandbox:
    """A sandbox for html (autoescaped) or for text and subjects (not escaped)."""
    environment = _BoundedSandbox(
        autoescape=html, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True
    )
    environment.filters = _filters(environment.filters)
    for name in _REFUSED_GLOBALS:
        environment.globals.pop(name, None)
    environment.globals["namespace"] = _BoundedNamespace
    return environment


_JINJA = {True: _jinja_environment(html=True), False: _jinja_environment(html=False)}


# --- the parsed tree -------------------------------------------------------------------------


def _filtered(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Bounds(NodeTransformer):
    """Rewrites a parsed template (so that no template can opt out): every `{% for %}`
    iterable on the clock, every `~` joined by `_joined`, every list, tuple and dict
    literal measured by `_sized`."""

    # generic_visit rewrites a node's children in place.

    def visit_For(self, node: nodes.For) -> nodes.For:  # noqa: N802 (the visitor's naming)
        self.generic_visit(node)
        node.iter = _filtered(node.iter, "_bounded")
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:  # noqa: N802
        self.generic_visit(node)
        return _filtered(nodes.Tuple(node.nodes, "load", lineno=node.lineno), "_joined")

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Expr:  # noqa: N802
        self.generic_visit(node)
        return _filtered(node, "_sized") if node.ctx == "load" else node

    def visit_List(self, node: nodes.List) -> nodes.Filter:  # noqa: N802
        self.generic_visit(node)
        return _filtered(node, "_sized")

    def visit_Dict(self, node: nodes.Dict) -> nodes.Filter:  # noqa: N802
        self.generic_visit(node)
        return _filtered(node, "_sized")


@functools.lru_cache(maxsize=256)
def compile_jinja(source: str, html: bool) -> jinja2.Template:
    """Parse, bound and compile once per distinct source."""
    environment = _JINJA[html]
    try:
        tree = _Bounds().visit(environment.parse(source))
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
            raise LimitExceeded(f"the template's output is larger than the output limit ({limit})")
        parts.append(chunk)
    return "".join(parts)
