"""The template languages: Handlebars renders SendGrid's common forms as Handlebars.js does;
Jinja2 escapes html; both refuse sandbox escapes and stay within time and output bounds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.templates.engines import RenderError, RenderLimits, check_syntax, render

LIMITS = RenderLimits(max_seconds=0.5, max_output=64 * 1024)


def hbs(source: str, data: dict[str, Any]) -> str:
    """Render Handlebars as html."""
    return render("handlebars", source, data, html=True, limits=LIMITS)


def jinja(source: str, data: dict[str, Any], *, html: bool = True) -> str:
    """Render Jinja2."""
    return render("jinja", source, data, html=html, limits=LIMITS)


# Expected outputs are what handlebars.js 4.7 (SendGrid's engine) produces for these forms.
HANDLEBARS_CASES = [
    ("Hi {{name}}", {"name": "Ann"}, "Hi Ann"),
    ("{{name}}", {"name": "<b>&\"'`=</b>"}, "&lt;b&gt;&amp;&quot;&#x27;&#x60;&#x3D;&lt;/b&gt;"),
    ("{{{name}}}", {"name": "<b>bold</b>"}, "<b>bold</b>"),
    ("{{user.first}} {{user.missing}}!", {"user": {"first": "Jo"}}, "Jo !"),
    ("{{#if vip}}VIP{{else}}regular{{/if}}", {"vip": True}, "VIP"),
    ("{{#if vip}}VIP{{else}}regular{{/if}}", {"vip": 0}, "regular"),
    ("{{#if items}}some{{else}}none{{/if}}", {"items": []}, "none"),
    ("{{#if obj}}truthy{{/if}}", {"obj": {}}, "truthy"),
    ("{{#unless paid}}Please pay.{{/unless}}", {"paid": False}, "Please pay."),
    ("{{#unless paid}}x{{else}}thanks{{/unless}}", {"paid": True}, "thanks"),
    (
        "{{#each items}}{{@index}}:{{this}}{{#unless @last}}, {{/unless}}{{/each}}",
        {"items": ["a", "b", "c"]},
        "0:a, 1:b, 2:c",
    ),
    ("{{#each items}}{{name}}{{else}}empty{{/each}}", {"items": []}, "empty"),
    ("{{#each prices}}{{@key}}={{this}};{{/each}}", {"prices": {"a": 1, "b": 2}}, "a=1;b=2;"),
    (
        "{{#each orders}}{{../currency}}{{total}} {{/each}}",
        {"currency": "$", "orders": [{"total": 5}]},
        "$5 ",
    ),
    ("{{#with user}}{{first}}{{/with}}", {"user": {"first": "Jo"}}, "Jo"),
    ("{{! a comment }}kept", {}, "kept"),
    ("{{#equals tier 'gold'}}G{{else}}other{{/equals}}", {"tier": "gold"}, "G"),
    ("{{#notEquals tier 'gold'}}not gold{{/notEquals}}", {"tier": "silver"}, "not gold"),
    ("{{#greaterThan n 5}}big{{else}}small{{/greaterThan}}", {"n": 7}, "big"),
    ("{{#lessThan n 5}}small{{/lessThan}}", {"n": 2}, "small"),
    ("{{#and a b}}both{{else}}not both{{/and}}", {"a": True, "b": False}, "not both"),
    ("{{#or a b}}either{{/or}}", {"a": False, "b": "x"}, "either"),
    ("{{length items}}", {"items": [1, 2, 3]}, "3"),
    ('{{insert name "default=Customer"}}', {}, "Customer"),
    ('{{insert name "default=Customer"}}', {"name": "Ann"}, "Ann"),
    ("{{n}} {{flag}} {{nothing}}", {"n": 1.5, "flag": True, "nothing": None}, "1.5 true "),
]


@pytest.mark.parametrize(("source", "data", "expected"), HANDLEBARS_CASES)
def test_handlebars_renders_like_handlebars_js(
    source: str, data: dict[str, Any], expected: str
) -> None:
    assert hbs(source, data) == expected


def test_handlebars_escapes_subjects_and_text_too_as_sendgrid_does() -> None:
    assert render("handlebars", "{{x}}", {"x": "A&B"}, html=False, limits=LIMITS) == "A&amp;B"
    assert render("handlebars", "{{{x}}}", {"x": "A&B"}, html=False, limits=LIMITS) == "A&B"


def test_jinja_escapes_html_but_not_text() -> None:
    assert jinja("<p>{{ x }}</p>", {"x": "<script>"}) == "<p>&lt;script&gt;</p>"
    assert jinja("{{ x }}", {"x": "<script>"}, html=False) == "<script>"
    assert jinja("{{ missing.deeper }}|{{ y|default('d') }}", {}) == "|d"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''|attr('__class__') }}",
        "{{ 'x'|attr('format') }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__.os }}",
        "{{ self.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format('') }}",
        "{{ '%s' % 'x' }}",
        "{{ [].append(1) }}",
    ],
)
def test_sandbox_escapes_fail(source: str) -> None:
    with pytest.raises(RenderError, match=r"SecurityError|not allowed"):
        jinja(source, {})


def test_names_outside_the_data_are_empty_not_internals() -> None:
    assert jinja("{{ config }}{{ request.application }}{{ lipsum.__globals__ }}", {}) == ""


@pytest.mark.parametrize(
    ("engine", "source", "data"),
    [
        (
            "jinja",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            {},
        ),
        (
            "jinja",
            "{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}",
            {"x": list(range(1000))},
        ),
        ("jinja", "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", {}),
        ("jinja", "{{ 'a' * 1000000000 }}", {}),
        ("jinja", "{{ 'a'.center(1000000000) }}", {}),
        ("jinja", "{{ '{:>999999999}'.format(1) }}", {}),
        ("jinja", "{{ ((10 ** 60) ** 60) ** 60 }}", {}),
        ("jinja", "{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", {}),
        (
            "handlebars",
            "{{#each x}}{{#each ../x}}{{#each ../../x}}{{/each}}{{/each}}{{/each}}",
            {"x": list(range(1000))},
        ),
        (
            "handlebars",
            "{{#each x}}{{#each ../x}}{{{../../big}}}{{/each}}{{/each}}",
            {"x": list(range(100)), "big": "y" * 1000},
        ),
    ],
)
def test_render_time_and_output_are_bounded(engine: str, source: str, data: dict[str, Any]) -> None:
    started = time.monotonic()
    with pytest.raises(RenderError):
        render(engine, source, data, html=False, limits=LIMITS)
    assert time.monotonic() - started < 2 * LIMITS.max_seconds + 0.5


@pytest.mark.parametrize(
    ("engine", "source"),
    [
        ("jinja", "{% if %}"),
        ("jinja", "{{ x "),
        ("handlebars", "{{#if x}}open"),
        ("handlebars", "{{#if}"),
    ],
)
def test_syntax_errors_are_found_before_rendering(engine: str, source: str) -> None:
    with pytest.raises(RenderError):
        check_syntax(engine, source, html=True)


def test_rendering_is_deterministic() -> None:
    data = {"b": 2, "a": 1, "items": {"z": 1, "y": 2}}
    source = "{% for k, v in items.items() %}{{ k }}{{ v }}{% endfor %}{{ a }}{{ b }}"
    assert len({jinja(source, data) for _ in range(5)}) == 1
