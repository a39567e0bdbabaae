"""Every value a template builds is bounded, not only its output (issue 10, item 1): the
audit's amplifications fail the render early, with little memory, and legitimate templates
that build values still render."""

from __future__ import annotations

import tracemalloc
from typing import Any

import httpx
import pytest

from app.templates.budget import LimitExceeded
from app.templates.engines import RenderError, RenderLimits, render
from tests.support import Sender
from tests.test_end_to_end import Deliver, message_view, send

LIMITS = RenderLimits(max_seconds=2.0, max_output=1024 * 1024)
# A render stopped by its limits may have kept a few values of up to the limit each; the
# audit's reproductions reached 64 MiB to 1 GB.
PEAK_MEMORY = 24 * 1024 * 1024


def doublings(count: int, step: str = "{{% set s{next} = s{this} ~ s{this} %}}") -> str:
    """The audit's template: an 8-character string doubled `count` times in set statements."""
    steps = "".join(step.format(this=i, next=i + 1) for i in range(count))
    return "{% set s0 = 'aaaaaaaa' %}" + steps + f"{{{{ s{count}|length }}}}"


def nested(count: int, literal: str) -> str:
    """A container that holds its predecessor twice, `count` times over: little memory (the
    parts are shared), but exponentially large once printed or compared."""
    steps = "".join(f"{{% set v{i + 1} = {literal.format(x=f'v{i}')} %}}" for i in range(count))
    return "{% set v0 = 'aaaaaaaa' %}" + steps + f"{{{{ v{count} }}}}"


def namespaces(count: int) -> str:
    """Namespaces whose attributes hold the one before twice, through attribute sets only,
    then the first one grown: a namespace can change after it is put in another."""
    steps = "".join(
        f"{{% set n{i + 1} = namespace() %}}"
        f"{{% set n{i + 1}.a = n{i} %}}{{% set n{i + 1}.b = n{i} %}}"
        for i in range(count)
    )
    return (
        "{% set n0 = namespace(s='a') %}"
        + steps
        + "{% set n0.s = 'a' * 1000000 %}"
        + f"{{{{ n{count} }}}}|{{{{ [n{count}, n{count}] }}}}"
    )


HOSTILE = {
    "set and ~, 24 doublings": doublings(24),
    "namespace and ~": "{% set ns = namespace(s='aaaaaaaa') %}"
    + "{% set ns.s = ns.s ~ ns.s %}" * 24
    + "{{ ns.s|length }}",
    "set and +": doublings(24, "{{% set s{next} = s{this} + s{this} %}}"),
    "block set": doublings(
        24, "{{% set s{next} %}}{{{{ s{this} }}}}{{{{ s{this} }}}}{{% endset %}}"
    ),
    "macro": "{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}{% set s0 = 'aaaaaaaa' %}"
    + "".join(f"{{% set s{i + 1} = twice(s{i}) %}}" for i in range(24))
    + "{{ s24|length }}",
    "filter block": doublings(
        24,
        "{{% set s{next} %}}{{% filter lower %}}{{{{ s{this} }}}}{{{{ s{this} }}}}"
        "{{% endfilter %}}{{% endset %}}",
    ),
    "replace filter": "{% set a = 'a' * 10000 %}{{ a|replace('a', 'b' * 100000)|length }}",
    "replace method": "{% set a = 'a' * 10000 %}{{ a.replace('a', 'b' * 100000)|length }}",
    "replace by subscript": "{% set a = 'a' * 10000 %}{{ a['replace']('a', 'b' * 100000) }}",
    "replace on bytes": "{% set a = ('a' * 10000).encode() %}"
    "{{ a.replace('a'.encode(), ('b' * 100000).encode())|length }}",
    "replace of the empty string": "{% set a = 'a' * 10000 %}{{ a|replace('', 'b' * 1000) }}",
    "join filter": "{% set a = 'a' * 1000000 %}{{ ([a] * 1000)|join|length }}",
    "join method": "{% set a = 'a' * 1000000 %}{{ a.join(['x'] * 1000)|length }}",
    "join separator": "{% set a = 'a' * 1000000 %}{{ (['x'] * 1000)|join(a)|length }}",
    "join over a generator": "{% set a = 'a' * 1000000 %}"
    "{{ range(1000)|map('replace', 'x', a)|join(a)|length }}",
    "repeat a list of big strings": "{% set a = 'a' * 1000000 %}{{ ([a] * 1000)|length }}",
    "list literals": nested(30, "[{x}, {x}]"),
    "tuple literals": nested(30, "({x}, {x})"),
    "dict literals": nested(30, "{{'a': {x}, 'b': {x}}}"),
    "dict() calls": nested(30, "dict(a={x}, b={x})"),
    "batch fill": "{% set a = 'a' * 1000000 %}"
    "{% for row in [1]|batch(1000000, a) %}{{ row }}{% endfor %}",
    "many values, each within the limit": "{% set a = 'a' * 1000000 %}"
    + "".join(f"{{% set a{i} = a ~ '{i}' %}}" for i in range(100))
    + "{{ a99|length }}",
    "values held by recursion": "{% macro down(n, s) %}{% if n %}{{ down(n - 1, s ~ 'x') }}"
    "{% endif %}{% endmacro %}{{ down(100, 'a' * 1000000)|length }}",
    "translate": "{% set a = 'a' * 10000 %}{{ a.translate({97: 'b' * 100000})|length }}",
    "printf on bytes": "{{ ('%999999999d'.encode() % 1)|length }}",
    "format by subscript": "{{ '{:>999999999}'['format'](1)|length }}",
    "center by subscript": "{{ 'x'['center'](1000000)['center'](1000000) }}",
}


# Blocks and call blocks render their bodies again at every call: these spend exponential
# time as well as size, and whichever limit comes first stops them.
REPEATED_BODIES = {
    "blocks": "{% block b0 %}aaaaaaaa{% endblock %}"
    + "".join(
        f"{{% block b{i + 1} %}}{{{{ self.b{i}() }}}}{{{{ self.b{i}() }}}}{{% endblock %}}"
        for i in range(24)
    ),
    "call blocks": "{% macro twice() %}{{ caller() }}{{ caller() }}{% endmacro %}"
    + "{% call twice() %}" * 30
    + "aaaaaaaa"
    + "{% endcall %}" * 30,
}


def render_within(source: str, data: dict[str, Any] | None = None, *, html: bool = False) -> str:
    """Render with the default limits, measuring the peak memory of the render alone."""
    tracemalloc.start()
    try:
        return render("jinja", source, data or {}, html=html, limits=LIMITS)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_MEMORY, f"the render peaked at {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_amplifications_fail_before_they_use_memory(source: str, html: bool) -> None:
    with pytest.raises(RenderError, match=r"larger than|too large|not allowed"):
        render_within(source, html=html)


@pytest.mark.parametrize("source", REPEATED_BODIES.values(), ids=REPEATED_BODIES.keys())
def test_repeated_bodies_stop_at_a_limit_with_little_memory(source: str) -> None:
    with pytest.raises(LimitExceeded):
        render_within(source)


def test_a_limit_breach_is_told_apart_from_other_failures() -> None:
    with pytest.raises(LimitExceeded):
        render("jinja", doublings(24), {}, html=False, limits=LIMITS)
    with pytest.raises(RenderError) as caught:
        render("jinja", "{{ 1 / 0 }}", {}, html=False, limits=LIMITS)
    assert not isinstance(caught.value, LimitExceeded)


def test_values_up_to_the_limit_are_built() -> None:
    # 8 characters doubled 17 times is exactly the output limit (1 MiB).
    assert render_within(doublings(17)) == str(1024 * 1024)
    assert render_within(doublings(17).replace("|length", "")) == "a" * 1024 * 1024


def test_one_doubling_past_the_limit_is_refused_with_the_limit() -> None:
    with pytest.raises(LimitExceeded, match="1048576"):
        render_within(doublings(18))


LEGITIMATE = [
    (
        "{% set ns = namespace(lines=[], total=0) %}"
        "{% for item in items %}{% set ns.lines = ns.lines + [item.name ~ ': ' ~ item.price] %}"
        "{% set ns.total = ns.total + item.price %}{% endfor %}"
        "{{ ns.lines|join('\n') }}\nTotal: {{ ns.total }}",
        {"items": [{"name": f"item {i}", "price": i} for i in range(500)]},
        "item 499: 499\nTotal: 124750",
    ),
    (
        "{% set greeting %}Hello {{ name|title }}{% endset %}{{ greeting ~ '!' }}"
        "{{ {'a': [1, 2], 'b': (3, 4)}|tojson }}",
        {"name": "ann lee"},
        'Hello Ann Lee!{"a": [1, 2], "b": [3, 4]}',
    ),
    (
        "{{ body|replace('\n', '<br>') }}{{ ', '.join(tags) }}{{ ' '['join'](tags) }}",
        {"body": "line one\nline two", "tags": ["x", "y"]},
        "line one<br>line twox, yx y",
    ),
    (
        "{% for row in cells|batch(3, '-') %}{{ row|join('|') }};{% endfor %}",
        {"cells": list(range(7))},
        "0|1|2;3|4|5;6|-|-;",
    ),
    (
        "{{ (text * 2)|truncate(12) }}|{{ 'ab'.replace('b', 'c') }}|{{ [1] * 3 + [4] }}",
        {"text": "hello world "},
        "hello...|ac|[1, 1, 1, 4]",
    ),
]


@pytest.mark.parametrize(
    "source", [namespaces(30), nested(30, "namespace(a={x}, b={x})")], ids=["set", "call"]
)
def test_namespaces_print_without_what_they_hold(source: str) -> None:
    # What a namespace holds can change after it is put in another one or in a list, so
    # it cannot be counted in their size: it is never printed through them either.
    assert render_within(source).startswith("<Namespace>")


@pytest.mark.parametrize(("source", "data", "expected"), LEGITIMATE)
def test_templates_that_build_values_still_render(
    source: str, data: dict[str, Any], expected: str
) -> None:
    assert expected in render_within(source, data)


def test_concatenation_escapes_in_html_as_jinja_does() -> None:
    source = (
        "{{ '<b>'|safe ~ name }}|{{ name ~ '&' }}|{% set x %}<i>{{ name }}</i>{% endset %}{{ x }}"
    )
    assert render_within(source, {"name": "<Ann>"}, html=True) == (
        "<b>&lt;Ann&gt;|&lt;Ann&gt;&amp;|<i>&lt;Ann&gt;</i>"
    )
    assert render_within(source, {"name": "<Ann>"}) == "<b><Ann>|<Ann>&|<i><Ann></i>"


@pytest.mark.parametrize(
    ("source", "data"),
    [
        # 30 levels of {{#each}} over two items: 2^30 copies of the innermost text.
        ("{{#each @root.x}}" * 30 + "a" * 1000 + "{{/each}}" * 30, {"x": [1, 2]}),
        # A big value repeated by nested blocks and helpers.
        (
            "{{#each x}}{{#each @root.x}}{{#equals 1 1}}{{{insert @root.big}}}{{/equals}}"
            "{{/each}}{{/each}}",
            {"x": list(range(100)), "big": "y" * 100_000},
        ),
    ],
)
def test_handlebars_blocks_stop_at_the_limit_with_little_memory(
    source: str, data: dict[str, Any]
) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded):
            render("handlebars", source, data, html=True, limits=LIMITS)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_MEMORY, f"the render peaked at {peak / 2**20:.1f} MiB"


async def test_the_audits_template_drops_its_recipient_with_the_reason(
    client: httpx.AsyncClient, sender: Sender, deliver: Deliver
) -> None:
    accepted = await send(
        client,
        sender,
        subject="x",
        text=doublings(24),
        template_engine="jinja",
        to=["victim@example.test"],
    )
    await deliver()
    view = await message_view(client, sender, accepted["id"])
    [recipient] = view["recipients"]
    assert recipient["status"] == "dropped"
    response = recipient["events"][-1]["data"]["response"]
    assert "larger than the output limit" in response
