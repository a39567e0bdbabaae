"""SendGrid's Handlebars helpers, as its "Using Handlebars" reference documents them (the
examples below are the reference's own), and helpers it does not have refused, never
rendered as nothing."""

from __future__ import annotations

from typing import Any

import pytest

from app.templates.engines import LimitExceeded, RenderError, RenderLimits, check_syntax, render
from app.templates.plaintext import plain_text

LIMITS = RenderLimits(max_seconds=0.5, max_output=64 * 1024)
# The reference's formatDate example: Tuesday, January 1st, 2020 3:00:00 PM at -0800.
STAMP = {
    "timeStamp": "2020-01-01T23:00:00.000Z",
    "dateFormat": "MMMM DD, YYYY h:mm:ss A",
    "timezoneOffset": "-0800",
}


def hbs(source: str, data: dict[str, Any]) -> str:
    """Render Handlebars as html."""
    return render("handlebars", source, data, html=True, limits=LIMITS)


def test_format_date_without_an_offset_is_utc() -> None:
    html = hbs("<p>Join us {{formatDate timeStamp dateFormat}}</p>", STAMP)
    assert html == "<p>Join us January 01, 2020 11:00:00 PM</p>"


def test_format_date_with_an_offset() -> None:
    html = hbs("<p>Join us {{formatDate timeStamp dateFormat timezoneOffset}}</p>", STAMP)
    assert html == "<p>Join us January 01, 2020 3:00:00 PM</p>"


@pytest.mark.parametrize(
    ("layout", "shown"),
    [
        ("YYYY", "2020"),
        ("YY", "20"),
        ("MMMM", "January"),
        ("MMM", "Jan"),
        ("MM", "01"),
        ("M", "1"),
        ("DD", "01"),
        ("D", "1"),
        ("dddd", "Wednesday"),
        ("ddd", "Wed"),
        ("hh", "03"),
        ("h", "3"),
        ("HH", "15"),
        ("H", "15"),
        ("mm", "00"),
        ("m", "0"),
        ("ss", "00"),
        ("s", "0"),
        ("A", "PM"),
        ("ZZ", "-0800"),
        ("Z", "-08:00"),
        ("MM/DD/YYYY [at] HH:mm", "01/01/2020 at 15:00"),
    ],
)
def test_every_documented_token(layout: str, shown: str) -> None:
    data = {**STAMP, "dateFormat": layout}
    assert hbs("{{formatDate timeStamp dateFormat timezoneOffset}}", data) == shown


def test_format_date_takes_epoch_seconds_and_milliseconds_and_colon_offsets() -> None:
    source = '{{formatDate t "YYYY-MM-DD HH:mm Z" "+05:30"}}'
    assert hbs(source, {"t": 1577919600}) == "2020-01-02 04:30 +05:30"
    assert hbs(source, {"t": 1577919600000}) == "2020-01-02 04:30 +05:30"


def test_the_issue_example_renders_the_date() -> None:
    html = hbs('{{formatDate orderDate "MM/DD/YYYY"}}', {"orderDate": "2024-03-15T10:30:45Z"})
    assert html == "03/15/2024"


def test_a_missing_date_prints_nothing_as_a_missing_value_does() -> None:
    assert hbs('[{{formatDate orderDate "MM/DD/YYYY"}}]', {}) == "[]"


@pytest.mark.parametrize(
    ("source", "data"),
    [
        ('{{formatDate when "YYYY"}}', {"when": "yesterday"}),
        ('{{formatDate when "YYYY" "PST"}}', {"when": "2020-01-01T00:00:00Z"}),
        ("{{formatDate when}}", {"when": "2020-01-01T00:00:00Z"}),
    ],
)
def test_a_date_that_cannot_be_formatted_fails_the_render(
    source: str, data: dict[str, Any]
) -> None:
    with pytest.raises(RenderError, match="formatDate"):
        hbs(source, data)


def test_format_date_is_held_to_the_output_limit_before_it_builds() -> None:
    small = RenderLimits(max_seconds=0.5, max_output=1000)
    with pytest.raises(LimitExceeded):
        render(
            "handlebars",
            "{{formatDate t f}}",
            {"t": 0, "f": "Z" * 900},
            html=False,
            limits=small,
        )


@pytest.mark.parametrize(
    ("source", "data", "shown"),
    [
        # equals and notEquals coerce, as the reference says: {{#equals 3 "3"}} is true
        ('{{#equals 3 "3"}}yes{{else}}no{{/equals}}', {}, "yes"),
        ("{{#equals a b}}yes{{else}}no{{/equals}}", {"a": 289199, "b": 289199}, "yes"),
        ("{{#equals a b}}yes{{else}}no{{/equals}}", {"a": 167320, "b": 289199}, "no"),
        ("{{#equals a b}}yes{{else}}no{{/equals}}", {"a": 289199, "b": "289199"}, "yes"),
        ("{{#notEquals a b}}differ{{else}}same{{/notEquals}}", {"a": 1, "b": "1"}, "same"),
        ("{{#notEquals a b}}differ{{/notEquals}}", {"a": 20230710, "b": 20230715}, "differ"),
        ("{{#greaterThan a b}}high{{else}}low{{/greaterThan}}", {"a": 100, "b": 78}, "high"),
        ("{{#greaterThan a b}}high{{else}}low{{/greaterThan}}", {"a": 55, "b": 78}, "low"),
        ('{{#greaterThan a "9"}}high{{/greaterThan}}', {"a": 10}, "high"),
        ("{{#lessThan a b}}low{{else}}high{{/lessThan}}", {"a": 55, "b": 78}, "low"),
        ("{{#and a b}}both{{else}}not{{/and}}", {"a": "Pasta", "b": ""}, "not"),
        ("{{#and a b}}both{{else}}not{{/and}}", {"a": "Pasta", "b": "Coffee"}, "both"),
        ("{{#or a b}}either{{else}}neither{{/or}}", {"a": False, "b": 0}, "neither"),
        ("{{#or a b}}either{{/or}}", {"a": False, "b": True}, "either"),
        (
            "{{#greaterThan (length items) 0}}some{{else}}none{{/greaterThan}}",
            {"items": []},
            "none",
        ),
        ("{{#greaterThan (length items) 0}}some{{/greaterThan}}", {"items": ["raft"]}, "some"),
        ("{{length word}} {{length n}}", {"word": "abc", "n": 5}, "3 0"),
        ('{{insert name "default=Customer"}}', {}, "Customer"),
        ('{{insert businessName "your business"}}', {}, "your business"),
        ('{{insert businessName "your business"}}', {"businessName": "Acme"}, "Acme"),
        ("{{#unless user.active}}call {{@root.phone}}{{/unless}}", {"phone": "1"}, "call 1"),
        ("{{#with user}}{{name}}{{/with}}", {"user": {"name": "Ben"}}, "Ben"),
        ("{{log name}}kept", {"name": "secret"}, "kept"),
    ],
)
def test_sendgrids_documented_helpers(source: str, data: dict[str, Any], shown: str) -> None:
    assert hbs(source, data) == shown


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ('{{formatDat orderDate "MM/DD/YYYY"}}', "formatDat"),
        ("{{#ifEquals a b}}x{{/ifEquals}}", "ifEquals"),
        ("{{#if (isEmpty items)}}x{{/if}}", "isEmpty"),
        ("{{#each items}}{{uppercase this}}{{/each}}", "uppercase"),
        ("{{{json data}}}", "json"),
        ("{{user.format name}}", "user.format"),
    ],
)
def test_a_helper_sendgrid_does_not_have_is_refused(source: str, name: str) -> None:
    with pytest.raises(RenderError, match=f"unknown helper {name}"):
        check_syntax("handlebars", source, html=True)
    with pytest.raises(RenderError, match=f"unknown helper {name}"):
        hbs(source, {"items": [1], "a": 1, "b": 1, "orderDate": "2020-01-01"})


def test_values_and_sections_are_not_helper_calls() -> None:
    assert (
        hbs(
            "{{#items}}{{this}}{{/items}} {{name}} {{user.name}}",
            {
                "items": [1, 2],
                "name": "n",
                "user": {"name": "u"},
            },
        )
        == "12 n u"
    )


def test_plain_text_made_from_html() -> None:
    html = (
        "<html><head><style>p{}</style><title>t</title></head><body>"
        "<h1>Hi {{name}}</h1><p>Your order &amp; more:</p><ul><li>one</li><li>two</li></ul>"
        "<p><a href='https://example.test/o'>Track it</a><br>Thanks</p>"
        "<script>alert(1)</script></body></html>"
    )
    assert plain_text(html) == (
        "Hi {{name}}\n\nYour order & more:\n\none\n\ntwo\n\n"
        "Track it (https://example.test/o)\nThanks"
    )


def test_format_date_in_a_loop_is_on_the_renders_clock() -> None:
    """Each call is on the deadline: many cheap dates cannot outrun the time limit."""
    quick = RenderLimits(max_seconds=0.05, max_output=64 * 1024 * 1024)
    data = {"days": list(range(300_000)), "t": "2020-01-01T00:00:00Z"}
    with pytest.raises(LimitExceeded, match="too long"):
        render(
            "handlebars",
            '{{#each days}}{{formatDate @root.t "D"}}{{/each}}',
            data,
            html=True,
            limits=quick,
        )
